"""Shared test helpers (pytest puts this folder on sys.path)."""
import os
import sys

import numpy as np
from PIL import Image

from cbdm_aug.cli import main

# `cbdm-aug` in a fresh interpreter, and its environment: one thread, unbuffered
CLI = [sys.executable, "-c", "from cbdm_aug.cli import main; main()"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
# `cbdm-aug run` at toy size (tests/conftest.py's `finished`)
TINY = ["--preset", "tiny", "--gen-steps", "3", "--classifier-epochs", "1", "--seeds", "0,1", "--device", "cpu",
        "--no-progress"]


def make_folder(root, counts=(12, 6, 3), size=16, mode="L"):
    """A labelled image folder ``root/class {c}/{i}.png`` of random images, ``counts[c]`` a class."""
    rng = np.random.default_rng(0)
    for c, n in enumerate(counts):
        d = root / f"class {c}"
        d.mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 255, (size, size) if mode == "L" else (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i}.png")
    return root


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
