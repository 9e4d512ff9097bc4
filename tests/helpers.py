"""Shared test helpers: plain functions and constants (pytest puts this folder on sys.path). Fixtures
live in conftest.py; a test module never imports another test module (an imported fixture is
registered again there and runs again)."""
import os
import sys

import numpy as np
from PIL import Image

from cbdm_aug.cache.generate import SamplerSettings
from cbdm_aug.cli import main

# `cbdm-aug` in a fresh interpreter, with one OpenMP thread and unbuffered output.
CLI = [sys.executable, "-c", "from cbdm_aug.cli import main; main()"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

# fit-generator's flags for a few-step run on tiny data
FAST_FIT = ["--preset", "tiny", "--batch-size", "8", "--sample-every", "1000", "--checkpoint-every", "4"]
FAST_FIT_NO_HFLIP = ["--preset", "tiny", "--batch-size", "4", "--sample-every", "1000", "--no-hflip"]
# `cbdm-aug run` at toy size (conftest's `finished`): a few generator steps, one classifier epoch, two seeds, CPU
TINY = ["--preset", "tiny", "--gen-steps", "3", "--classifier-epochs", "1", "--seeds", "0,1", "--device", "cpu",
            "--no-progress"]

# The tiny generator of the cache tests (conftest's `run_dir` and `gen`): three classes, 6, 3 and 1 real images.
TINY_CLASSES = ["cat", "dog", "fish"]
TINY_REAL = [6, 3, 1]
DARK_BRIGHT = ["dark", "bright"]  # the classes of the filter tests' stub classifier (stub_space)
FAST_SAMPLER = SamplerSettings("dpmpp", steps=3, guidance=1.0, seed=7)  # a few steps, guidance 1


def run_cli(args, capsys):
    """Run ``cbdm-aug ARGS`` in-process as the console script does; returns (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["cbdm-aug", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def error_line(args, capsys):
    """The last line of a ``cbdm-aug ARGS`` that must fail without a traceback."""
    code, _, err = run_cli(args, capsys)
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err
    return lines[-1]


def make_folder(root, counts=(12, 6, 3), size=16, mode="L"):
    """An image folder ``root/class <c>/<i>.png`` with ``counts[c]`` random images a class."""
    rng = np.random.default_rng(0)
    for c, n in enumerate(counts):
        d = root / f"class {c}"
        d.mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 255, (size, size) if mode == "L" else (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i}.png")
    return root


def cache_arrays(path):
    """(images, labels, seeds) of a cache file, read whole."""
    import h5py

    with h5py.File(path, "r") as f:
        return f["images"][()], f["labels"][()], f["seeds"][()]


def tiny_generator_meta(cfg):
    """generator.json of the cache tests' tiny generator with UNet config ``cfg``."""
    from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE

    return {"preset": "tiny", "model": cfg, "class_names": TINY_CLASSES, "class_counts": TINY_REAL, "image_size": 8,
            "channels": 1, "schedule": DEFAULT_SCHEDULE, "loss": {}, "step": 0, "package_version": "test"}


class Killed(Exception):
    """What ``kill_after`` raises in place of a kill."""


def kill_after(n_batches):
    """An ``on_batch`` hook that raises ``Killed`` at the ``n_batches``-th batch."""
    calls = []

    def hook(done):
        calls.append(done)
        if len(calls) == n_batches:
            raise Killed
    return hook


def tiny_recipe(tmp_path, npz, **extra):
    """A two-epoch classifier recipe on ``npz`` (conftest's ``tiny_npz``), written to ``tmp_path``."""
    text = f"""
name: tiny
data: {{train: {npz}, longtail: exp, imbalance: 4, max_per_class: 40}}
model: {{name: resnet8_cifar}}
optim: {{lr: 0.05}}
schedule: {{epochs: 2, batch_size: 16, kind: cosine, warmup_epochs: 0.5}}
eval: {{many_threshold: 30, few_threshold: 15}}
"""
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def stub_space():
    """A classifier feature space for the filter tests: logits (N, 2) from mean brightness, confident
    'bright' above 0 and confident 'dark' below (classes ``DARK_BRIGHT``)."""
    import torch

    from cbdm_aug.evaluate.features import FeatureSpace

    class Brightness(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(20.0), requires_grad=False)

        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([-m, m], 1) * self.scale

    prepare = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # noqa: E731
    net = Brightness()
    return FeatureSpace("classifier", "brightness stub", net, prepare, 2, classifier=net, class_names=DARK_BRIGHT)
