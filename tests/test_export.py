"""`cbdm-aug export`: a cache as an image folder, one tar or webdataset shards, read back by the real
readers (torchvision's ImageFolder, timm's folder, tar and wds readers, the webdataset package) with
the cache's labels, counts and pixels; a manifest row per image; resume, a live writer, a full disk;
the run's decisions honoured by default."""
import csv
import json
import os
import resource
import subprocess
import sys
import tarfile
from collections import Counter

import h5py
import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from cbdm_aug.cache.export import ExportError, ExportSettings, export_cache
from cbdm_aug.cache.writer import write_cache
from cbdm_aug.locking import output_lock

NAMES = ["2", "10", "cat"]  # "10" sorts before "2" in ImageFolder and after it in timm (natural order)
COUNTS = (5, 3, 2)
CLI = [sys.executable, "-c", "from cbdm_aug.cli import main; main()"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _cache(path, counts=COUNTS, size=8, filtered=True):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(counts)), counts)
    images = rng.integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8)
    write_cache(path, images, labels, class_names=NAMES, seeds=1000 + np.arange(len(labels)),
                generator={"weights_sha256": "ab" * 32, "image_size": size},
                sampler={"sampler": "dpmpp-sde", "steps": 20, "guidance": 1.0, "seed": 0})
    if filtered:
        with h5py.File(path, "r+") as f:
            f.attrs["filter"] = json.dumps({"criteria": {"classifier_confidence_min": 0.5}})
    return path, images, labels


@pytest.fixture
def cache(tmp_path):
    return _cache(tmp_path / "filtered.h5")


def _real_folder(root, counts=(2, 4, 1), size=12):
    rng = np.random.default_rng(1)
    for name, n in zip(NAMES, counts):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"im{i}.png")
    return root


def _expected(images, labels, real=None):
    """Counter of (class name, pixel bytes): what every reader must give back."""
    want = Counter((NAMES[y], x.tobytes()) for x, y in zip(images, labels))
    for p in sorted(real.rglob("*.png")) if real else []:
        want[(p.parent.name, np.asarray(Image.open(p).convert("RGB")).tobytes())] += 1
    return want


def _got(samples, idx_to_class):
    return Counter((idx_to_class[int(y)], np.asarray(im.convert("RGB")).tobytes()) for im, y in samples)


def _manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_export_reads_back_through_imagefolder_and_timm_with_the_caches_labels_counts_and_pixels(cache, tmp_path):
    from timm.data import create_dataset
    from torchvision.datasets import ImageFolder

    path, images, labels = cache
    out = tmp_path / "out"
    record = export_cache(path, out, ExportSettings(), progress=False)
    want = _expected(images, labels)
    tv = ImageFolder(out)
    assert sorted(tv.classes) == sorted(NAMES) and _got(tv, tv.classes) == want
    ds = create_dataset("", root=str(out))
    assert _got(ds, {i: c for c, i in ds.reader.class_to_idx.items()}) == want
    rows = _manifest(out)
    assert len(rows) == len(labels) and all(r["kind"] == "synthetic" for r in rows)
    assert sorted(int(r["seed"]) for r in rows) == list(range(1000, 1000 + len(labels)))
    assert {r["generator_sha256"] for r in rows} == {"ab" * 32} and {r["sampler"] for r in rows} == {"dpmpp-sde"}
    assert {r["near_copy"] for r in rows} == {"false"} and {r["filter_score"] for r in rows} == {""}
    meta = json.loads((out / "export.json").read_text())
    assert meta["status"] == "complete" and meta["cache_provenance"]["filter"]["criteria"]
    assert record["counts"] == {n: {"synthetic": c, "real": 0} for n, c in zip(NAMES, COUNTS)}


def test_real_images_are_hard_linked_into_the_folder_and_one_manifest_filter_drops_the_generated_ones(cache, tmp_path):
    from torchvision.datasets import ImageFolder

    path, images, labels = cache
    real, out = _real_folder(tmp_path / "real"), tmp_path / "out"
    record = export_cache(path, out, ExportSettings(real=str(real)), progress=False)
    assert record["done"]["linked"] == 7 and record["done"]["written"] == len(labels)
    tv = ImageFolder(out)
    assert _got(tv, tv.classes) == _expected(images, labels, real)
    rows = _manifest(out)
    kept = [r for r in rows if r["kind"] != "synthetic"]  # the one filter that leaves the real images
    assert len(rows) == 7 + len(labels) and len(kept) == 7
    assert all(os.path.samefile(out / r["path"], r["source"]) for r in kept)


def test_per_class_caps_every_class_with_its_real_images_first_for_a_balanced_folder(cache, tmp_path):
    path, _, _ = cache
    real, out = _real_folder(tmp_path / "real"), tmp_path / "out"
    record = export_cache(path, out, ExportSettings(real=str(real), per_class=3, classes=("2", "10")), progress=False)
    # "2": 2 real + 1 generated; "10": 3 of its 4 real images, no generated one
    assert record["counts"] == {"2": {"real": 2, "synthetic": 1}, "10": {"real": 3, "synthetic": 0}}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["10", "2"]


def test_a_tar_export_reads_back_through_timms_tar_reader(cache, tmp_path):
    from timm.data import create_dataset

    path, images, labels = cache
    out = tmp_path / "out"
    export_cache(path, out, ExportSettings(format="tar"), progress=False)
    ds = create_dataset("", root=str(out / "images.tar"))
    assert len(ds) == len(labels)
    assert _got(ds, ds.reader.class_idx_to_name) == _expected(images, labels)
    assert all(r["path"].startswith("images.tar:") for r in _manifest(out))


def test_webdataset_shards_read_back_through_the_webdataset_package_and_timms_wds_reader(cache, tmp_path):
    wds = pytest.importorskip("webdataset")
    from timm.data import create_dataset

    path, images, labels = cache
    out = tmp_path / "out"
    record = export_cache(path, out, ExportSettings(format="webdataset", shard_size=4), progress=False)
    shards = sorted(out.glob("shard-*.tar"))
    assert len(shards) == 3
    want = _expected(images, labels)
    classes = record["classes"]  # cls is the index in this list
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False).decode("pil").to_tuple("png", "cls"))
    assert _got(samples, classes) == want
    members = set()
    for s in shards:
        with tarfile.open(s) as tf:
            members |= {k for k in tf.getnames() if k.endswith(".png")}
    assert members == {f"{r['key']}.png" for r in _manifest(out)}
    ds = create_dataset("wds/out", root=str(out), split="train")
    assert _got(list(ds), classes) == want


def test_one_epoch_of_a_timm_model_trains_from_the_exported_folder_through_timms_create_loader(cache, tmp_path):
    import timm
    import torch
    from timm.data import create_dataset, create_loader

    path, _, labels = cache
    out = tmp_path / "out"
    export_cache(path, out, ExportSettings(real=str(_real_folder(tmp_path / "real"))), progress=False)
    ds = create_dataset("", root=str(out), split="train", is_training=True)
    loader = create_loader(ds, input_size=(3, 16, 16), batch_size=4, is_training=True, use_prefetcher=False,
                           num_workers=0)
    model = timm.create_model("test_resnet", num_classes=len(NAMES), pretrained=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = 0
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
        assert x.shape[1:] == (3, 16, 16) and torch.isfinite(loss)
    assert seen == (len(labels) + 7) // 4 * 4  # timm drops the last partial batch in training


@pytest.mark.parametrize("fmt", ["folder", "tar", "webdataset"])
def test_a_rerun_checks_what_is_there_rewrites_what_is_torn_or_missing_and_gives_the_same_export(cache, tmp_path, fmt):
    path, images, labels = cache
    out = tmp_path / "out"
    settings = ExportSettings(format=fmt, shard_size=4)
    export_cache(path, out, settings, progress=False)
    manifest = (out / "manifest.csv").read_bytes()
    if fmt == "folder":
        files = sorted(out.rglob("*.png"))
        files[0].unlink()
        files[1].write_bytes(files[1].read_bytes()[:40])  # torn by a kill
    elif fmt == "tar":
        tar = out / "images.tar"
        with open(tar, "r+b") as f:
            f.truncate(tar.stat().st_size // 2 - 100)  # a kill mid-member
    else:
        (out / "shard-000001.tar").unlink()
        shard = out / "shard-000002.tar"
        shard.write_bytes(shard.read_bytes()[:700])
    record = export_cache(path, out, settings, progress=False)
    assert record["resumed"] and record["done"]["checked"] > 0
    assert sum(record["done"].values()) - record["done"].get("rewritten", 0) == len(labels)
    assert (out / "manifest.csv").read_bytes() == manifest
    if fmt == "folder":
        assert record["done"]["rewritten"] == 1 and record["done"]["written"] == 2
        from torchvision.datasets import ImageFolder

        tv = ImageFolder(out)
        assert _got(tv, tv.classes) == _expected(images, labels)
    elif fmt == "tar":
        from timm.data import create_dataset

        ds = create_dataset("", root=str(out / "images.tar"))
        assert _got(ds, ds.reader.class_idx_to_name) == _expected(images, labels)
    else:
        assert record["done"] == {"checked": 4, "written": 6}  # shards of 4, 4 and 2: the first one kept
        from timm.data import create_dataset

        assert _got(list(create_dataset("wds/out", root=str(out), split="train")), NAMES) == _expected(images, labels)


def test_a_non_empty_folder_is_refused_in_one_line_and_overwrite_empties_it(cache, tmp_path, capsys):
    path, _, _ = cache
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(["export", path, "--out", out], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "not empty" in err and "notes.txt" in err and "--overwrite" in err
    code, stdout, err = run_cli(["export", path, "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert not (out / "notes.txt").exists() and "10 images" in stdout
    code, _, err = run_cli(["export", path, "--out", out, "--format", "tar"], capsys)  # other settings
    assert code != 0 and "other settings (format)" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ExportError, match="holds the input"):
        export_cache(path, tmp_path, ExportSettings(), overwrite=True, progress=False)
    assert path.exists()


def test_bad_options_get_one_line_errors_that_name_the_value(cache, tmp_path, capsys):
    path, _, _ = cache
    for args, says in ((["--classes", "2,dog"], "'dog' not in the cache"),
                       (["--real", str(tmp_path / "none.npz")], "none.npz"),
                       (["--per-class", "0"], "--per-class")):
        code, _, err = run_cli(["export", path, "--out", tmp_path / "o", *args], capsys)
        assert code != 0 and says in err and "Traceback" not in err, err


def test_an_export_whose_folder_a_live_process_writes_is_refused_and_names_it(cache, tmp_path, capsys):
    path, _, _ = cache
    out = tmp_path / "out"
    with output_lock(out, folder=True, what="export", command="cbdm-aug export other"):
        code, _, err = run_cli(["export", path, "--out", out], capsys)
    assert code != 0 and f"pid {os.getpid()}" in err and "cbdm-aug export other" in err
    assert not (out / "export.json").exists()


def test_a_full_disk_stops_in_one_line_naming_the_file_and_the_same_command_then_finishes(tmp_path, capsys):
    path, images, labels = _cache(tmp_path / "c.h5", counts=(20, 10, 10))
    out = tmp_path / "out"
    limit = 16 << 10  # export.json fits, the 40-member tar (~40 KB) does not

    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    cmd = ["export", str(path), "--out", str(out), "--format", "tar"]
    r = subprocess.run([*CLI, *cmd], env=ENV, capture_output=True, text=True, timeout=300,
                       preexec_fn=full_disk, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"Error: disk full in stage 'export' while writing {out / 'images.tar'}"), line
    assert "run the same command again" in line
    assert json.loads((out / "export.json").read_text())["status"] == "running"  # nothing claims to be done
    code, stdout, err = run_cli(cmd, capsys)
    assert code == 0, err
    assert "checked" in stdout and json.loads((out / "export.json").read_text())["status"] == "complete"
    from timm.data import create_dataset

    ds = create_dataset("", root=str(out / "images.tar"))
    assert _got(ds, ds.reader.class_idx_to_name) == _expected(images, labels)


# -- the run's decisions (issue 31): a refused class gets no generated image unless the user asks --------

def _run_folder(tmp_path, shares, real_counts=(2, 4, 1)):
    """A run folder as `cbdm-aug run` leaves it: OUT/cache/filtered.h5 with decisions.json beside it, and
    the real training split OUT/data/train.npz."""
    from cbdm_aug.data.npz import write_npz

    out = tmp_path / "OUT"
    (out / "cache").mkdir(parents=True)
    (out / "data").mkdir()
    path, images, labels = _cache(out / "cache" / "filtered.h5")
    (out / "cache" / "decisions.json").write_text(json.dumps(shares))
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(len(NAMES)), real_counts)
    write_npz(out / "data" / "train.npz", x_train=rng.integers(0, 256, (len(y), 8, 8, 3), dtype=np.uint8),
              y_train=y, class_names=NAMES)
    return out, path


def test_the_readmes_export_command_gives_a_class_the_run_refused_no_generated_image(tmp_path, capsys):
    run, path = _run_folder(tmp_path, {"2": 1.0, "10": 0.0, "cat": 1.0})
    out = tmp_path / "mixed" / "train"
    code, stdout, err = run_cli(["export", path, "--out", out, "--real", run / "data" / "train.npz",
                                 "--per-class", 5], capsys)
    assert code == 0, err
    assert not list((out / "10").glob("syn-*")) and list((out / "2").glob("syn-*"))
    # its 4 real images, then 1 real repeat in the place of the generated image the decision withheld
    assert len(list((out / "10").iterdir())) == 5 and len(list((out / "10").glob("real-*-r1.png"))) == 1
    assert "decisions.json" in stdout and "class 10: the run refused generated images" in stdout
    assert "1 withheld; 1 repeats of its real images take their places" in stdout
    record = json.loads((out / "export.json").read_text())
    assert record["decisions"]["file"] == str((run / "cache" / "decisions.json").resolve())
    assert record["decisions"]["classes"]["10"] == {"share": 0.0, "synthetic": 0, "withheld": 1, "repeated": 1,
                                                    "short": 0, "floor": None}
    rows = [r for r in _manifest(out) if r["class"] == "10"]
    assert {r["kind"] for r in rows} == {"real"} and sum(bool(r["repeat_of"]) for r in rows) == 1


def test_every_generated_image_is_exported_only_when_asked_for_with_decisions_none(tmp_path, capsys):
    run, path = _run_folder(tmp_path, {"2": 1.0, "10": 0.0, "cat": 1.0})
    out = tmp_path / "all"
    code, stdout, err = run_cli(["export", path, "--out", out, "--decisions", "none"], capsys)
    assert code == 0, err
    assert len(list((out / "10").glob("syn-*"))) == COUNTS[1] and "withheld" not in stdout
    assert json.loads((out / "export.json").read_text())["decisions"] == {"file": None, "classes": {}}


def test_a_fractional_share_bounds_the_generated_images_and_without_real_images_the_class_stays_short(tmp_path):
    _, path = _run_folder(tmp_path, {"2": 0.4, "10": 1.0, "cat": 1.0})
    record = export_cache(path, tmp_path / "o", ExportSettings(per_class=5), progress=False)
    # 5 places, a share of 0.4: at most 2 generated; no --real, so nothing repeats and 3 places stay empty
    assert record["counts"]["2"] == {"synthetic": 2, "real": 0}
    assert record["decisions"]["classes"]["2"] == {"share": 0.4, "synthetic": 2, "withheld": 3, "repeated": 0,
                                                   "short": 3, "floor": None}
    assert record["counts"]["10"]["synthetic"] == COUNTS[1]


def test_decisions_file_chooses_another_file_and_one_of_another_run_is_refused_in_one_line(tmp_path, capsys):
    _, path = _run_folder(tmp_path, {"2": 1.0, "10": 1.0, "cat": 1.0})
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"format": "cbdm-aug decisions", "version": 2,
                                "classes": {"cat": {"share": 0.0, "why": "too few to judge"}}}))
    record = export_cache(path, tmp_path / "o", ExportSettings(decisions=str(mine)), progress=False)
    assert record["counts"]["cat"]["synthetic"] == 0 and record["counts"]["2"]["synthetic"] == COUNTS[0]
    (tmp_path / "other.json").write_text(json.dumps({"dog": 0.0}))
    code, _, err = run_cli(["export", path, "--out", tmp_path / "o2", "--decisions", tmp_path / "other.json"], capsys)
    assert code != 0 and "'dog'" not in err and "dog" in err and "--decisions none" in err
    assert len(err.strip().splitlines()) == 1


def test_a_class_balanced_export_keeps_the_arms_real_floor_and_zero_turns_it_off(tmp_path, capsys):
    # class "2" has 2 real and 5 generated images: at --per-class 6 and the default floor 0.5, at most 3 places
    # are generated, as the + synthetic arms' sampler mixed them, and a real repeat takes the 6th; the line says so
    run, path = _run_folder(tmp_path, {"2": 1.0, "10": 1.0, "cat": 1.0})
    real = run / "data" / "train.npz"
    code, stdout, err = run_cli(["export", path, "--out", tmp_path / "floor", "--real", real, "--per-class", 6], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "floor" / "export.json").read_text())
    assert record["counts"]["2"] == {"real": 3, "synthetic": 3}
    assert record["decisions"]["classes"]["2"] == {"share": 0.5, "synthetic": 3, "withheld": 1, "repeated": 1,
                                                   "short": 0, "floor": 0.5}
    assert "class 2: the real floor keeps 50% of its places for its real images" in stdout
    code, _, err = run_cli(["export", path, "--out", tmp_path / "nofloor", "--real", real, "--per-class", 6,
                            "--min-real-share", 0], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "nofloor" / "export.json").read_text())
    assert record["counts"]["2"] == {"real": 2, "synthetic": 4} and record["decisions"]["classes"] == {}
