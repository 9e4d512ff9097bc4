"""Hostile and broken input: every case is a clear one-line error naming the file or value, or a
documented skip with a count. Never a traceback, a hang or a silently wrong result."""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zlib

import h5py
import numpy as np
import pytest
import torch
from helpers import FAST_FIT as FAST
from helpers import make_folder, run_cli
from PIL import Image

from cbdm_aug.cache.reader import SyntheticCache
from cbdm_aug.cache.schema import CacheError
from cbdm_aug.cache.writer import write_cache
from cbdm_aug.data.npz import load_npz
from cbdm_aug.data.sources import MAX_IMAGE_PIXELS, DataError, load_image_folder, open_data
from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
from cbdm_aug.diffusion.unet import build_unet, unet_config
from cbdm_aug.generator.run_dir import RunDirError, load_generator, save_generator, sha256_file
from cbdm_aug.plugin.dataset import RealSyntheticDataset


def _one_line_error(args, capsys) -> str:
    code, _, err = run_cli(args, capsys)
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error"), err
    return lines[-1]


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "data", counts=(4, 3), size=8)


# ---------------------------------------------------------------- image folders


def test_a_truncated_image_is_named_or_skipped_with_a_count(folder):
    good = (folder / "class 0" / "0.png").read_bytes()
    (folder / "class 0" / "cut.png").write_bytes(good[:len(good) // 2])
    with pytest.raises(DataError, match="cut.png.*--skip-bad"):
        load_image_folder(folder)
    data = load_image_folder(folder, skip_bad=True)
    assert len(data) == 7 and data.skipped == {"unreadable image": 1}


def test_zero_byte_and_non_image_files_with_image_extensions_are_named_or_skipped(folder):
    (folder / "class 0" / "empty.png").write_bytes(b"")
    (folder / "class 1" / "notes.jpg").write_text("these are my notes, not a photo")
    with pytest.raises(DataError, match="empty.png|notes.jpg"):
        load_image_folder(folder)
    assert load_image_folder(folder, skip_bad=True).skipped == {"unreadable image": 2}


def test_mixed_modes_and_sizes_load_as_one_rgb_array(tmp_path):
    root = tmp_path / "mixed"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    Image.new("L", (8, 8), 200).save(root / "a" / "l.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "a" / "rgb.png")
    Image.new("RGBA", (12, 12), (0, 255, 0, 255)).save(root / "a" / "rgba.png")
    Image.new("P", (8, 8), 3).save(root / "b" / "p.png")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(root / "b" / "i16.png")  # I;16
    data = load_image_folder(root)
    assert data.images.shape == (5, 8, 8, 3) and data.images.dtype == np.uint8
    assert data.images[3].min() == 255  # b/i16.png: 16-bit white is scaled to 8-bit white, not clipped garbage


def _png_header_claiming(path, width, height):
    """A valid 1x1 PNG whose header is rewritten to claim ``width`` x ``height`` pixels."""
    Image.new("L", (1, 1), 0).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # chunk type + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("side", [20000, 5000])
def test_a_huge_image_is_refused_from_its_header_before_decoding(folder, side):
    # The file is tiny: only its header says 20000x20000 (or 5000x5000). Decoding it would fail
    # differently ("truncated"), so the message proves the refusal came from the header alone.
    _png_header_claiming(folder / "class 1" / "huge.png", side, side)
    assert side * side > MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match=r"huge.png.*(pixels|decompression bomb)"):
        load_image_folder(folder)
    data = load_image_folder(folder, skip_bad=True)
    assert len(data) == 7 and sum(data.skipped.values()) == 1


def test_symlinks_that_loop_or_leave_the_folder_are_skipped_with_a_count(folder, tmp_path):
    outside = tmp_path / "outside.png"
    Image.new("L", (8, 8), 1).save(outside)
    os.symlink(outside, folder / "class 0" / "escape.png")
    os.symlink(folder / "class 0" / "loop_b.png", folder / "class 0" / "loop_a.png")
    os.symlink(folder / "class 0" / "loop_a.png", folder / "class 0" / "loop_b.png")
    os.symlink(folder / "class 0", folder / "class 1" / "dirloop")  # not followed by the walk
    os.symlink(folder / "class 0" / "0.png", folder / "class 1" / "inside.png")  # fine: stays inside
    data = load_image_folder(folder)
    assert len(data) == 8
    assert data.skipped == {"broken or looping symlink": 2, "symlink outside the data folder": 1}


def test_symlinked_class_folders_that_leave_the_folder_or_break_are_skipped_with_a_count(folder, tmp_path, capsys):
    elsewhere = make_folder(tmp_path / "elsewhere", counts=(5,), size=8)
    os.symlink(elsewhere / "class 0", folder / "stolen")        # a whole class from outside the root
    os.symlink(tmp_path / "gone", folder / "broken")             # a class folder that no longer exists
    os.symlink(folder, folder / "loop")                          # the root itself: would hold every class
    os.symlink(folder / "class 0", folder / "alias")             # fine: stays inside
    data = load_image_folder(folder)
    assert data.class_names == ["alias", "class 0", "class 1"]
    assert len(data) == 4 + 4 + 3
    assert data.skipped == {"class folder symlink outside the data folder": 2, "broken or looping symlink": 1}
    code, out, err = run_cli(["fit-generator", folder, "--out", tmp_path / "r", "--max-steps", 1, *FAST], capsys)
    assert code == 0, err
    assert "2 class folder symlink outside the data folder" in out and "1 broken or looping symlink" in out


def test_class_names_with_spaces_and_non_ascii_survive_into_a_cache(tmp_path):
    names = ["red fox", "café ☕", "猫"]
    root = tmp_path / "names"
    for i, n in enumerate(names):
        (root / n).mkdir(parents=True)
        Image.new("L", (8, 8), i * 50).save(root / n / "x.png")
    data = load_image_folder(root)
    assert data.class_names == sorted(names)
    cache = write_cache(tmp_path / "c.h5", data.images, data.labels, class_names=data.class_names)
    assert SyntheticCache(cache).class_names == data.class_names


def test_an_empty_class_and_a_single_class_are_refused_by_name(folder, tmp_path, capsys):
    (folder / "hollow class").mkdir()
    assert "'hollow class'" in _one_line_error(["fit-generator", folder, "--out", tmp_path / "r"], capsys)
    make_folder(tmp_path / "one", counts=(3,), size=8)
    with pytest.raises(DataError, match="single class"):
        open_data(tmp_path / "one")


# ---------------------------------------------------------------- npz files


@pytest.mark.parametrize("arrays, needle", [
    ({"x_train": np.zeros((4, 8, 6), np.uint8), "y_train": np.arange(4)}, "square"),
    ({"x_train": np.zeros((4, 8, 8, 2), np.uint8), "y_train": np.arange(4)}, "shape"),
    ({"x_train": np.zeros((4, 8), np.uint8), "y_train": np.arange(4)}, "shape"),
    ({"x_train": np.zeros((4, 8, 8), np.float32), "y_train": np.arange(4)}, "dtype float32"),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.arange(3)}, "expected \\(4,\\)"),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, 1, 2, -1])}, "negative label"),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, 1, 2, 9]),
      "class_names": np.array(["a", "b", "c"])}, "label 9 out of range"),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0., 1., 0., 1.])}, "integer class ids"),
    ({"x_train": np.array([[1], [2]], dtype=object), "y_train": np.arange(2)}, "cannot read its arrays"),
    ({"pixels": np.zeros((4, 8, 8), np.uint8)}, "no image/label arrays"),
])
def test_bad_npz_files_are_one_clear_line(tmp_path, capsys, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    msg = _one_line_error(["fit-generator", path, "--out", tmp_path / "r"], capsys)
    assert "bad.npz" in msg
    assert re.search(needle, msg), msg


def test_a_file_that_is_not_an_npz_is_named(tmp_path):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(DataError, match="x.npz: not a readable .npz"):
        load_npz(tmp_path / "x.npz")


# ---------------------------------------------------------------- caches


class _Real(torch.utils.data.Dataset):
    classes = ["a", "b"]

    def __init__(self, size=8, channels=3):
        self.targets = [0, 1, 0, 1]
        self.shape = (size, size, channels)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return np.zeros(self.shape, np.uint8), self.targets[i]


def _cache(path, names=("a", "b"), size=8, channels=3):
    images = np.zeros((4, size, size, channels), np.uint8)
    return write_cache(path, images, [0, 1, 0, 1][:len(names) * 2], class_names=list(names))


def test_caches_with_other_classes_or_image_size_are_refused_by_the_dataset(tmp_path):
    with pytest.raises(ValueError, match="other.h5: class names differ"):
        RealSyntheticDataset(_Real(), [_cache(tmp_path / "other.h5", names=("a", "z"))])
    with pytest.raises(ValueError, match="big.h5: synthetic images are 16x16"):
        RealSyntheticDataset(_Real(), [_cache(tmp_path / "big.h5", size=16)], resize=False)


def test_broken_caches_are_one_clear_line_in_the_cli(tmp_path, capsys):
    good = _cache(tmp_path / "good.h5")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:1000])
    unfinished = _cache(tmp_path / "unfinished.h5")
    with h5py.File(unfinished, "r+") as f:
        f.attrs["complete"] = False
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    future = _cache(tmp_path / "future.h5")
    with h5py.File(future, "r+") as f:
        f.attrs["schema_version"] = 99
    for path, needle in ((truncated, "not a readable HDF5"), (foreign, "not a cbdm-aug synthetic cache"),
                         (future, "version 99 is newer")):
        assert needle in _one_line_error(["inspect", path], capsys)
    for path, needle in ((truncated, "not a readable HDF5"), (unfinished, "unfinished cache"),
                         (foreign, "not a cbdm-aug"), (future, "newer")):
        with pytest.raises(CacheError, match=needle):
            RealSyntheticDataset(_Real(), [path])


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("args, needle", [
    (["--max-steps", "-5"], "max-steps"),
    (["--checkpoint-every", "0"], "checkpoint-every"),
    (["--lr", "nan"], "lr"),
    (["--lr", "1e9"], "lr"),
    (["--ema-decay", "2"], "ema-decay"),
    (["--num-nodes", "0"], "num-nodes"),
    (["--p-uncond", "1.5"], "p_uncond"),
    (["--gamma", "-1"], "gamma"),
    (["--image-size", "100000"], "image-size"),
])
def test_absurd_fit_generator_options_are_one_clear_line(folder, tmp_path, capsys, args, needle):
    assert needle in _one_line_error(["fit-generator", folder, "--out", tmp_path / "r", *FAST, *args], capsys)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = unet_config("tiny", 8, 1, 2)
    meta = {"preset": "tiny", "model": cfg, "class_names": ["a", "b"], "class_counts": [4, 2], "image_size": 8,
            "channels": 1, "schedule": DEFAULT_SCHEDULE, "loss": {}, "step": 0, "package_version": "test"}
    torch.manual_seed(0)
    return save_generator(tmp_path_factory.mktemp("run"), build_unet(cfg), meta)


@pytest.mark.parametrize("args, needle", [
    (["--per-class", "-3"], "synthetic count.*got"),
    (["--per-class", str(10 ** 12)], "synthetic count.*got"),
    (["--steps", "0"], "--steps"),
    (["--guidance", "-1"], "--guidance"),
    (["--guidance", "inf"], "guidance"),
    (["--guidance", "nan"], "guidance"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-1"], "--seed"),
    (["--shard", "3/2"], "--shard"),
])
def test_absurd_generate_options_are_one_clear_line(run_dir, tmp_path, capsys, args, needle):
    msg = _one_line_error(["generate", run_dir, "--out", tmp_path / "o.h5", "--device", "cpu", *args], capsys)
    assert re.search(needle, msg), msg
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("override, needle", [
    ("train.epochs=-1", "epochs"),
    ("train.batch_size=0", "batch_size"),
    ("train.lr=-0.1", "lr"),
    ("data.holdout_per_class=-2", "holdout_per_class"),
])
def test_absurd_train_classifier_settings_are_one_clear_line(tmp_path, capsys, override, needle):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  train: digits\n  holdout_per_class: 5\n")
    msg = _one_line_error(["train-classifier", recipe, "--dry-run", "--set", override], capsys)
    assert needle in msg


# ---------------------------------------------------------------- untrusted run folders


class _Bomb:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _copy_run(run_dir, dst):
    dst.mkdir()
    for name in ("generator.json", "ema.safetensors"):
        (dst / name).write_bytes((run_dir / name).read_bytes())
    return dst


def test_a_pickle_named_ema_safetensors_fails_cleanly_without_running_code(run_dir, tmp_path, capsys):
    bad = _copy_run(run_dir, tmp_path / "bad")
    marker = tmp_path / "pwned"
    (bad / "ema.safetensors").write_bytes(pickle.dumps({"w": _Bomb(marker)}))
    meta = json.loads((bad / "generator.json").read_text())
    meta["weights_sha256"] = sha256_file(bad / "ema.safetensors")  # the attacker controls both files
    (bad / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match="ema.safetensors: unreadable safetensors"):
        load_generator(bad)
    assert "unreadable safetensors" in _one_line_error(["generate", bad, "--out", tmp_path / "o.h5",
                                                        "--device", "cpu"], capsys)
    assert not marker.exists()


@pytest.mark.parametrize("model", [
    "os.system('touch pwned')",
    {"_class_name": "os.system", "args": ["touch pwned"]},
    {"sample_size": 8, "in_channels": "rm -rf /"},
    None,
])
def test_a_generator_json_with_a_strange_model_entry_fails_cleanly(run_dir, tmp_path, capsys, model):
    bad = _copy_run(run_dir, tmp_path / "bad")
    meta = json.loads((bad / "generator.json").read_text())
    meta["model"] = model
    (bad / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match="generator.json"):
        load_generator(bad)
    assert "generator.json" in _one_line_error(["generate", bad, "--out", tmp_path / "o.h5", "--device", "cpu"],
                                               capsys)


def test_weights_that_do_not_fit_the_model_entry_fail_cleanly(run_dir, tmp_path):
    bad = _copy_run(run_dir, tmp_path / "bad")
    meta = json.loads((bad / "generator.json").read_text())
    meta["model"] = unet_config("tiny", 8, 3, 2)  # weights are for 1 channel
    meta["channels"] = 3
    (bad / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match="ema.safetensors.*do not fit"):
        load_generator(bad)


_BOMB_PROBE = """
import json, resource, sys, time
from cbdm_aug.generator.run_dir import RunDirError, load_generator
from diffusers import UNet2DModel  # imported before the clock starts: only the refusal is measured
from safetensors.torch import load_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    load_generator(sys.argv[1])
    message = None
except Exception as e:
    message = f"{type(e).__name__}: {e}"
print(json.dumps({"seconds": time.perf_counter() - t, "message": message,
                  "grew_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def test_a_memory_bomb_model_config_is_refused_before_anything_is_allocated(run_dir, tmp_path, capsys):
    # 4096 channels x 4 levels x 4 layers: each number within its bound, ~20 billion parameters together.
    bad = _copy_run(run_dir, tmp_path / "bomb")
    meta = json.loads((bad / "generator.json").read_text())
    meta["model"].update(block_out_channels=[4096] * 4, layers_per_block=4,
                         down_block_types=["DownBlock2D"] * 4, up_block_types=["UpBlock2D"] * 4)
    meta["model"]["sample_size"] = meta["image_size"] = 64
    (bad / "generator.json").write_text(json.dumps(meta))
    import resource
    import subprocess
    import sys

    def cap_memory():  # a safety net should the refusal ever regress: fail, do not take the machine
        resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))

    r = subprocess.run([sys.executable, "-c", _BOMB_PROBE, str(bad)], capture_output=True, text=True,
                       timeout=600, preexec_fn=cap_memory, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["message"] and result["message"].startswith("RunDirError"), result
    assert "above the budget of 2 GiB" in result["message"], result
    assert result["seconds"] < 30 and result["grew_mb"] < 200, result  # ~1.5 s, 4 MB on a busy 2-core machine
    msg = _one_line_error(["generate", bad, "--out", tmp_path / "o.h5", "--device", "cpu"], capsys)
    assert "generator.json" in msg and "GiB" in msg, msg


@pytest.mark.parametrize("key, value, needle", [
    ("image_size", 100000, "image_size is 100000 but the model is built for 8"),
    ("channels", 4, "channels is 4"),
    ("class_names", ["a"] * 50, "number of class_names is 50"),
])
def test_sizes_that_sampling_would_use_must_match_the_model(run_dir, tmp_path, key, value, needle):
    bad = _copy_run(run_dir, tmp_path / "bad")
    meta = json.loads((bad / "generator.json").read_text())
    meta[key] = value
    (bad / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match=needle):
        load_generator(bad)


@pytest.mark.parametrize("update, needle", [
    ({"block_out_channels": [10 ** 9]}, "block_out_channels"),
    ({"layers_per_block": 10 ** 6}, "layers_per_block"),
    ({"num_class_embeds": 10 ** 9}, "num_class_embeds"),
    ({"sample_size": 2 ** 20}, "sample_size"),
    ({"sample_size": 256, "down_block_types": ["AttnDownBlock2D", "DownBlock2D"]}, "attention on a 256x256"),
])
def test_absurd_model_configs_are_refused_by_name(update, needle):
    from cbdm_aug.diffusion.unet import check_unet_config
    from cbdm_aug.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        check_unet_config({**unet_config("tiny", 8, 1, 2), **update})
    assert check_unet_config(unet_config("cifar-paper", 32, 3, 10)) == 35_751_939
