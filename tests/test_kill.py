"""SIGKILL at seeded random moments, then rerun: fit-generator resumes to its step count and
leaves only loadable files; generate resumes to the same images as an uninterrupted run."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch
from helpers import CLI, ENV, cache_arrays, make_folder
from helpers import FAST_FIT_NO_HFLIP as FAST

from cbdm_aug import load_generator
from cbdm_aug.cache.reader import read_header
from cbdm_aug.cache.schema import CacheError

KILLS = 5


def _kill_after(cmd, delay: float) -> bool:
    """Run ``cmd``, SIGKILL it after ``delay`` seconds; True if it was still running then."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        p.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return True


def _check_fit_outputs(out):
    """Whatever a kill left must load, or be plainly absent: no half-written file looks complete."""
    if (out / "run.json").exists():
        json.loads((out / "run.json").read_text())
    if (out / "generator.json").exists():
        load_generator(out)
    ckpt = out / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        assert "global_step" in torch.load(ckpt, map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_fit_generator_killed_at_random_points_resumes_to_a_loadable_finished_run(tmp_path):
    data = make_folder(tmp_path / "data", counts=(6, 3, 2), size=8)
    out = tmp_path / "run"
    cmd = [*CLI, "fit-generator", str(data), "--out", str(out), "--checkpoint-every", "3", "--resume", *FAST]
    endless = [*cmd, "--max-steps", "100000"]  # killed long before its end; --max-steps may change on resume
    rng = random.Random(8)
    delays = sorted(rng.uniform(1.0, 12.0) for _ in range(KILLS))  # imports, data loading, training, saving
    steps = []
    for delay in delays:
        assert _kill_after(endless, delay)
        _check_fit_outputs(out)
        steps.append(json.loads((out / "generator.json").read_text())["step"] if (out / "generator.json").exists() else None)
    last = steps[-1] or 0
    assert last > 3, steps  # it got past its first checkpoint
    r = subprocess.run([*cmd, "--max-steps", str(last + 6)], env=ENV, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stdout
    gen = load_generator(out)
    assert gen.meta["step"] == last + 6 and gen.meta["finished"] is True
    assert not list(out.rglob(".*tmp*")), list(out.rglob(".*tmp*"))  # no temporary file left behind
    print("fit-generator killed at", [f"{d:.1f}s/step {s}" for d, s in zip(delays, steps)])


@pytest.mark.slow
def test_generate_killed_at_random_points_resumes_to_the_uninterrupted_images(tiny_run, tmp_path):
    gen = [*CLI, "generate", str(tiny_run), "--per-class", "30", "--steps", "20", "--batch-size", "2",
           "--device", "cpu"]
    ref, out = tmp_path / "ref.h5", tmp_path / "out.h5"
    subprocess.run([*gen, "--out", str(ref)], env=ENV, check=True, capture_output=True, timeout=240)

    def num_done():  # peek past the writer's HDF5 file lock
        if not out.exists():
            return 0
        with h5py.File(out, "r", locking=False) as f:
            return int(f.attrs["num_done"])

    # Seeded random kill points, in images written (a time delay would mostly land in start-up).
    targets = sorted(random.Random(8).sample(range(2, 80), KILLS))
    done = []
    for target in targets:
        p = subprocess.Popen([*gen, "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        while num_done() < target:
            assert p.poll() is None, "finished before it could be killed"
            time.sleep(0.01)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        header = read_header(out, require_complete=False)
        assert not header["complete"]
        done.append(header["num_done"])
        with pytest.raises(CacheError, match="unfinished"):
            read_header(out)
    assert len(done) >= 2, done
    subprocess.run([*gen, "--out", str(out)], env=ENV, check=True, capture_output=True, timeout=240)
    for a, b in zip(cache_arrays(ref), cache_arrays(out)):
        np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob(".*tmp*"))
    print("generate killed with num_done", done)
