"""``cbdm-aug run``'s evidence without the proxies' leak (issue 34): the own proxies' images come from a generator
fitted without the images they are judged on, and the run's generator goes on from it on every image."""
import json
import subprocess

import numpy as np
import pytest
from helpers import CLI, ENV, TINY, cache_arrays, make_folder

from cbdm_aug import load_generator


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """A finished toy run whose two large classes (34, 31 images) can stand in for its 3-image class."""
    root = tmp_path_factory.mktemp("unseen")
    make_folder(root / "train", counts=(34, 31, 3), size=8)
    make_folder(root / "test", counts=(4, 4, 4), size=8)
    out = root / "run"
    r = subprocess.run([*CLI, "run", root / "train", "--test", root / "test", "--out", out, *TINY],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout


def test_the_evidence_generator_sees_each_own_proxy_only_through_the_images_its_probes_train_on(proxied):
    out, stdout = proxied
    unseen = json.loads((out / "stages" / "generator.json").read_text())["settings"]["unseen"]
    first = json.loads((out / "generator-unseen" / "generator.json").read_text())
    counts = dict(zip(first["class_names"], first["class_counts"]))
    assert unseen["proxies"] and all(counts[n] == 3 for n in unseen["proxies"])  # cut to the rare class's size
    assert counts["class 2"] == 3 and sum(counts.values()) == 34 + 31 + 3 - unseen["holdout"]
    final = json.loads((out / "generator" / "generator.json").read_text())
    assert final["class_counts"] == [34, 31, 3] and final["train"]["max_steps"] == unseen["continue_steps"]
    assert first["train"]["max_steps"] + unseen["continue_steps"] == 3  # --gen-steps in all
    assert final["init_from"]["weights_sha256"] == load_generator(out / "generator-unseen").weights_sha256
    assert "evidence generator: 2 steps without the" in stdout


def test_each_folds_with_probe_reads_its_own_proxys_images_from_the_unseen_generator_and_the_rest_from_the_cache(proxied):
    out, _ = proxied
    names = json.loads((out / "stages" / "data.json").read_text())["result"]["class_names"]
    cached_x, cached_y, _ = cache_arrays(out / "cache" / "filtered.h5")
    folds = sorted((out / "cache" / "evidence").glob("fold?-cache.h5"))
    assert folds
    read = 0
    for path in folds:
        x, y, _ = cache_arrays(path)
        recipe = (path.parent / path.name.replace("-cache.h5", "-with") / "recipe.yaml").read_text()
        assert str(path) in recipe  # the fold's "with" probe trained on it
        own = [c for c in range(len(names)) if not np.array_equal(x[y == c], cached_x[cached_y == c])]
        assert len(own) <= 1, path  # at most one class's images differ from the cache's: its own proxy's
        for c in own:  # and they are the unseen generator's, filtered as the cache was (none, if none passed)
            unseen = cache_arrays(path.parent / f"unseen-{c}-filtered.h5")[0]
            assert np.array_equal(unseen, x[y == c])
            read += len(unseen) > 0
    assert read  # some fold's probe read images of the unseen generator


def test_the_rare_classs_decision_and_the_report_say_the_proxies_images_were_unseen(proxied):
    out, _ = proxied
    d = json.loads((out / "report.json").read_text())["decisions"]["class 2"]
    assert d["source"] == "proxy" and "from a generator fitted without the images they are judged on" in d["why"]
    assert "with their own images from a generator fitted without the images they are judged on" in \
        (out / "report.md").read_text()


def test_a_run_without_the_evidence_fits_one_generator_from_scratch(tmp_path):
    make_folder(tmp_path / "train", counts=(34, 31, 3), size=8)
    make_folder(tmp_path / "test", counts=(2, 2, 2), size=8)
    out = tmp_path / "run"
    r = subprocess.run([*CLI, "run", tmp_path / "train", "--test", tmp_path / "test", "--out", out, *TINY,
                        "--seeds", "0", "--no-evidence"], env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / "generator-unseen").exists()
    assert json.loads((out / "generator" / "generator.json").read_text())["init_from"] is None


def test_the_evidence_generators_images_are_written_anew_unless_its_fit_already_started_on_them(tmp_path):
    """A file left from other data is never trained on: the stage's clean removes ``generator-unseen`` whenever the
    data or the plan changed, and the file is rewritten unless that fit already began on it (a resume)."""
    from cbdm_aug.data.npz import write_npz
    from cbdm_aug.pipeline.run import UNSEEN_RUN, _unseen_npz

    (tmp_path / "data").mkdir()
    labels = np.repeat(np.arange(2), 5)
    write_npz(tmp_path / "data" / "train.npz", x_train=np.zeros((10, 4, 4, 1), np.uint8), y_train=labels,
              class_names=["a", "b"])
    stale = tmp_path / "data" / "train-unseen.npz"
    write_npz(stale, x_train=np.zeros((1, 4, 4, 1), np.uint8), y_train=np.zeros(1, np.int64), class_names=["a", "b"])
    mask = labels == 1
    assert len(np.load(_unseen_npz(tmp_path, mask))["y_train"]) == 5  # no fit began on it: rewritten
    (tmp_path / UNSEEN_RUN).mkdir()
    (tmp_path / UNSEEN_RUN / "run.json").write_text("{}")
    assert len(np.load(_unseen_npz(tmp_path, np.zeros(10, bool)))["y_train"]) == 5  # a fit began on it: kept
