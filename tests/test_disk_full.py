"""A full disk during `generate` and during a fit-generator checkpoint, simulated in a subprocess by a
file-size limit (RLIMIT_FSIZE, as `ulimit -f`; Python ignores SIGXFSZ, so writes fail with EFBIG):
one clear line, nothing that looks complete when it is not, and a rerun with space finishes."""
import json
import resource
import subprocess
import sys

import numpy as np
from helpers import CLI, ENV, cache_arrays, make_folder, run_cli
from helpers import FAST_FIT_NO_HFLIP as FAST

from cbdm_aug import load_generator
from cbdm_aug.cache.reader import read_header
from cbdm_aug.generator.checkpoints import checkpoint_step

# `cbdm-aug generate` whose disk fills up after a given number of images: from then on the file-size
# limit sits at the next image's offset in the (preallocated) cache file, so every write there fails.
GENERATE_FILLING_UP = """
import os, resource
import cbdm_aug.cache.writer as w
after, write = int(os.environ["FULL_AFTER"]), w.CacheWriter.write
def filling_up(self, images):
    if self.num_done >= after:
        offset = self._f["images"].id.get_offset() + self.num_done * images[0].nbytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (offset, resource.RLIM_INFINITY))
    write(self, images)
w.CacheWriter.write = filling_up
from cbdm_aug.cli import main
main()
"""


def _one_line_failure(r) -> str:
    assert r.returncode != 0, r.stdout[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: disk full while writing"), r.stderr[-3000:]
    return lines[-1]


def test_generate_on_a_full_disk_stops_in_one_line_and_resumes_to_the_uninterrupted_images(tiny_run, tmp_path):
    args = ["generate", str(tiny_run), "--per-class", "6", "--steps", "2", "--batch-size", "2", "--device", "cpu"]
    ref, out = tmp_path / "ref.h5", tmp_path / "out.h5"
    assert run_cli([*args, "--out", ref], _Quiet())[0] == 0
    r = subprocess.run([sys.executable, "-c", GENERATE_FILLING_UP, *args, "--out", str(out)],
                       env=dict(ENV, FULL_AFTER="6"), capture_output=True, text=True, timeout=600)
    line = _one_line_failure(r)
    assert "6 of 18 images are saved" in line and "rerun the same command" in line, line
    header = read_header(out, require_complete=False)
    assert header["num_done"] == 6 and header["complete"] is False  # nothing claims to be complete
    assert not list(tmp_path.glob(".*tmp*"))
    assert run_cli([*args, "--out", out], _Quiet())[0] == 0  # with space again: resumes
    for a, b in zip(cache_arrays(ref), cache_arrays(out)):
        np.testing.assert_array_equal(a, b)


def test_generate_that_could_never_fit_is_refused_before_writing_anything(tiny_run, tmp_path):
    def small_disk():  # 64 KB: less than the preallocated cache
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))

    out = tmp_path / "out.h5"
    r = subprocess.run([*CLI, "generate", str(tiny_run), "--per-class", "40", "--steps", "2", "--device", "cpu",
                        "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=600,
                       preexec_fn=small_disk)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"Error: {out}: needs 1.1 MB but only 0.1 MB can be written there"), line
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_fit_generator_with_a_disk_too_full_for_its_checkpoint_stops_in_one_line_and_resumes(tmp_path, capsys):
    data, out = make_folder(tmp_path / "data", counts=(6, 3, 2), size=8), tmp_path / "run"
    cmd = ["fit-generator", str(data), "--out", str(out), "--checkpoint-every", "4", *FAST]
    assert run_cli([*cmd, "--max-steps", 4], capsys)[0] == 0
    last = out / "checkpoints" / "last.ckpt"
    # Room for every file but a checkpoint (weights, EMA and Adam's two moments: ~4x the EMA file).
    limit = 2 * (out / "ema.safetensors").stat().st_size
    assert last.stat().st_size > limit

    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    r = subprocess.run([*CLI, *cmd, "--max-steps", "12", "--resume"], env=ENV, capture_output=True, text=True,
                       timeout=600, preexec_fn=full_disk)
    line = _one_line_failure(r)
    assert f"the last complete checkpoint, {last}, is kept" in line and "--resume" in line, line
    assert checkpoint_step(last) == 4  # the checkpoint that could not be written left the last one whole
    assert not [p for p in out.rglob(".*") if "tmp" in p.name]
    load_generator(out)  # the exported generator is whole (its step may be ahead of the checkpoint)

    code, stdout, err = run_cli([*cmd, "--max-steps", 12, "--resume"], capsys)
    assert code == 0, err
    assert f"resuming from {last}" in stdout
    meta = json.loads((out / "generator.json").read_text())
    assert meta["step"] == 12 and meta["finished"] is True and checkpoint_step(last) == 12


class _Quiet:
    """capsys for run_cli where the output does not matter."""

    def readouterr(self):
        return "", ""
