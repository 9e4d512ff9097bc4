"""evaluate-generator and filter-cache end to end on tiny data the tests build, offline."""
import json
import socket

import h5py
import numpy as np
import pytest
import torch
from helpers import run_cli

from cbdm_aug.cache.reader import SyntheticCache
from cbdm_aug.cache.writer import write_cache
from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
from cbdm_aug.diffusion.unet import build_unet, unet_config
from cbdm_aug.generator.run_dir import save_generator

NAMES = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network: any connection attempt (a weights download) fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def class_images(c, n, seed):
    """8x8 grey images whose class decides a bright stripe's row: easy to learn, varied."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, 8, 8, 1), dtype=np.uint8)
    x[:, 2 * c + 1:2 * c + 3] = rng.integers(180, 256, (n, 2, 8, 1), dtype=np.uint8)
    return x


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    counts, test_counts = [30, 12, 6], [10, 10, 10]
    x = np.concatenate([class_images(c, n, c) for c, n in enumerate(counts)])
    xt = np.concatenate([class_images(c, n, 10 + c) for c, n in enumerate(test_counts)])
    y = np.repeat(np.arange(3), counts)
    yt = np.repeat(np.arange(3), test_counts)
    np.savez(root / "real.npz", x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(NAMES))
    torch.manual_seed(0)
    cfg = unet_config("tiny", 8, 1, 3)
    meta = {"preset": "tiny", "model": cfg, "class_names": NAMES, "class_counts": counts, "image_size": 8,
            "channels": 1, "schedule": DEFAULT_SCHEDULE, "loss": {}, "step": 0, "package_version": "test"}
    run = save_generator(root / "run", build_unet(cfg), meta)
    return root / "real.npz", run, x, y


def test_evaluate_generator_runs_end_to_end_and_writes_the_report_and_pictures(data, tmp_path, capsys):
    real, run, _, _ = data
    out = tmp_path / "eval"
    code, stdout, err = run_cli(["evaluate-generator", run, "--real", real, "--test", real, "--out", out,
                                 "--samples-per-class", 6, "--steps", 2, "--feature-epochs", 1, "--cas-epochs", 1,
                                 "--quiet"], capsys)
    assert code == 0, err
    r = json.loads((out / "report.json").read_text())
    assert r["feature_space"]["name"] == "classifier"
    assert "not comparable" in r["feature_space"]["note"] and "not comparable" in stdout
    for key in ("fid", "kid", "precision", "recall", "near_copy_share"):
        assert r["whole_set"][key] is not None
    assert [row["class"] for row in r["per_class"]] == NAMES
    assert r["tail"]["classes"] == ["c"]
    assert r["options"]["k"] == 3 and "k=3" in r["definitions"]["precision_recall"]
    assert len(r["cas"]["per_class"]) == 3 and 0 <= r["cas"]["top1"] <= 1
    assert (out / "per_class.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "grids").glob("*.png")) == ["000_a.png", "001_b.png", "002_c.png"]
    assert (out / "feature_net" / "model.pt").exists() and (out / "samples.h5").exists()

    # A second generator evaluated in the first one's feature space, from its samples cache.
    out2 = tmp_path / "eval2"
    code, _, err = run_cli(["evaluate-generator", "--cache", out / "samples.h5", "--real", real, "--out", out2,
                            "--samples-per-class", 6, "--feature-net", out / "feature_net", "--quiet"], capsys)
    assert code == 0, err
    r2 = json.loads((out2 / "report.json").read_text())
    assert r2["feature_space"]["source"] == str(out / "feature_net")
    # Same images, same feature network: what is counted must match exactly. The features are float
    # arithmetic whose kernels (and batch splits) a GPU may choose differently between the two runs; an
    # H200 gave FID 10.98555 vs 10.98692 (1.2e-4 apart), so float metrics get a tolerance GPUs meet.
    assert r2["class_names"] == r["class_names"]
    assert r2["real"]["reference_per_class"] == r["real"]["reference_per_class"]
    assert [row["train_count"] for row in r2["per_class"]] == [row["train_count"] for row in r["per_class"]]
    assert r2["whole_set"]["fid"] == pytest.approx(r["whole_set"]["fid"], rel=1e-2)

    # The samples in OUT are reused for the same settings (the sampler record of the cache header,
    # which leaves out unset options such as feedback guidance) ...
    before = (out / "samples.h5").stat().st_mtime_ns
    code, _, err = run_cli(["evaluate-generator", run, "--real", real, "--out", out, "--samples-per-class", 6,
                            "--steps", 2, "--feature-net", out / "feature_net", "--cas-epochs", 1, "--quiet"], capsys)
    assert code == 0, err
    assert (out / "samples.h5").stat().st_mtime_ns == before
    # ... and only for the same settings.
    code, _, err = run_cli(["evaluate-generator", run, "--real", real, "--out", out, "--samples-per-class", 6,
                            "--steps", 2, "--guidance", 0.5, "--quiet"], capsys)
    assert code != 0 and "holds samples of another generator, sampler or count" in err


@pytest.mark.parametrize("args, message", [
    (["nowhere", "--real", "REAL"], "no such generator run folder"),
    (["RUN", "--real", "missing.npz"], "missing.npz: no such file"),
    (["RUN", "--real", "REAL", "--inception-weights", "missing.pth"], "no such file"),
    (["RUN", "--real", "REAL", "--samples-per-class", 3], "--samples-per-class must be > --k"),
])
def test_bad_input_gives_a_one_line_error_not_a_traceback(data, tmp_path, capsys, args, message):
    real, run, _, _ = data
    args = [str(real) if a == "REAL" else str(run) if a == "RUN" else a for a in args]
    code, _, err = run_cli(["evaluate-generator", *args, "--out", tmp_path / "e", "--quiet"], capsys)
    assert code != 0 and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unusable_inception_weights_file_is_a_one_line_error_and_nothing_is_fetched(data, tmp_path, capsys):
    real, run, _, _ = data
    bad = tmp_path / "pt_inception.pth"
    bad.write_bytes(b"not weights")
    code, _, err = run_cli(["evaluate-generator", run, "--real", real, "--out", tmp_path / "e",
                            "--inception-weights", bad, "--quiet"], capsys)
    assert code != 0 and ("torch-fidelity" in err or "not usable Inception weights" in err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_filter_cache_drops_near_copies_and_records_the_counts_and_criteria(data, tmp_path, capsys):
    real, _, x, y = data
    fresh = np.concatenate([class_images(c, 4, 20 + c) for c in range(3)])
    copies = x[[0, 1, 30]]  # two copies of class-a training images, one of class b
    images = np.concatenate([fresh, copies])
    labels = np.concatenate([np.repeat(np.arange(3), 4), [0, 0, 1]])
    write_cache(tmp_path / "syn.h5", images, labels, class_names=NAMES, seeds=np.arange(100, 115))
    out = tmp_path / "filtered.h5"
    code, stdout, err = run_cli(["filter-cache", tmp_path / "syn.h5", "--out", out, "--real", real,
                                 "--confidence", 0, "--top-share", 0, "--false-positive-share", 0, "--epochs", 1,
                                 "--quiet"], capsys)
    assert code == 0, err
    assert "near-copy" in stdout and "kept 12 of 15" in stdout
    with SyntheticCache(out) as syn:
        assert syn.counts().tolist() == [4, 4, 4]
        assert syn.seeds.tolist() == list(range(100, 112))
        assert np.array_equal(np.stack([syn[i][0] for i in range(12)]), fresh)
    with h5py.File(out) as f:
        record = json.loads(f.attrs["filter"])
    assert record["removed_near_copy"] == {"a": 2, "b": 1, "c": 0}
    assert record["criteria"]["classifier_confidence_min"] == 0 and record["criteria"]["classifier_top_share"] is None
    assert record["criteria"]["classifier_false_positive_share"] is None
    assert record["criteria"]["near_copy_ratio"] == 0.5
