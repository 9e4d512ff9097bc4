"""`cbdm-aug run` stopped by a SIGTERM or Ctrl-C, or by a full disk, in any stage: it stops within
seconds with one line naming the stage (and, for a full disk, the file), and the same command
resumes and finishes. The full disk is a file-size limit set in the subprocess as the stage
starts (RLIMIT_FSIZE, as `ulimit -f`; Python ignores SIGXFSZ, so writes fail with EFBIG)."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import CLI, ENV, TINY, make_folder

from cbdm_aug.errors import DiskFull, stage_errors
from cbdm_aug.stopping import Stopped, stop_on_signals

# `cbdm-aug run` whose disk fills up as stage FULL_AT starts ("report": as the report is written).
RUN_FILLING_UP = """
import os, resource
import cbdm_aug.pipeline.report as report
import cbdm_aug.pipeline.stages as stages
target, limit = os.environ["FULL_AT"], int(os.environ["FULL_LIMIT"])
full = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
run, write_report = stages.Stages.run, report.write_report
def run_filling_up(self, name, *a, **k):
    if name == target:
        full()
    return run(self, name, *a, **k)
def write_report_filling_up(*a, **k):
    if target == "report":
        full()
    return write_report(*a, **k)
stages.Stages.run, report.write_report = run_filling_up, write_report_filling_up
from cbdm_aug.cli import main
main()
"""


def test_a_sigterm_inside_the_block_raises_stopped_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as e:
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode, long before this ends
    assert e.value.signum == signal.SIGTERM and e.value.exit_code == 143 and str(e.value) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_full_disk_inside_a_stage_names_the_stage_and_the_file_and_a_stop_learns_its_stage(tmp_path):
    with pytest.raises(DiskFull, match=r"disk full in stage 'cache' while writing /x/generated.h5 \(No space left"):
        with stage_errors("cache", tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device", "/x/generated.h5")
    with pytest.raises(DiskFull, match=r"stage 'arms' while writing /y/m.h5"):  # h5py names the file in its message
        with stage_errors("arms", tmp_path):
            raise RuntimeError("Can't write data (file write failed: filename = '/y/m.h5', errno = 28, "
                               "error message = 'No space left on device')")
    with pytest.raises(DiskFull, match=f"stage 'data' while writing in {tmp_path}"):  # no file named: the folder
        with stage_errors("data", tmp_path):
            raise OSError(errno.EFBIG, "File too large")
    with pytest.raises(ValueError, match="^other$"):  # anything else goes through as it was
        with stage_errors("data", tmp_path):
            raise ValueError("other")
    with pytest.raises(Stopped) as e:
        with stage_errors("generator"):
            raise Stopped(signal.SIGINT)
    assert e.value.stage == "generator" and e.value.exit_code == 130


def _copy_without(finished, tmp_path, stage):
    """The finished run, with ``stage``'s record and outputs removed, so a rerun runs just that stage."""
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    outputs = {"data": ["data"], "generator": ["generator"], "cache": ["cache"], "control": ["arms/control"],
               "report": ["report.md", "report.json", "per_class_accuracy.png", "samples.png", "per_class.csv"]}[stage]
    for o in outputs:
        p = out / o
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / "stages" / f"{stage}.json").unlink(missing_ok=True)
    return out


def _run_args(data, out):
    return ["run", str(data / "train"), "--test", str(data / "test"), "--out", str(out), *TINY]


@pytest.mark.parametrize("stage", ["data", "generator", "cache", "control", "report"])
def test_a_full_disk_in_any_stage_stops_in_one_line_naming_it_and_the_same_command_resumes(
        stage, finished, toy_folders, tmp_path):
    out = _copy_without(finished, tmp_path, stage)
    args = _run_args(toy_folders, out)
    limit = {"data": 512}.get(stage, 4096)  # below the size of a file the stage writes
    r = subprocess.run([sys.executable, "-c", RUN_FILLING_UP, *args], env=dict(ENV, FULL_AT=stage, FULL_LIMIT=str(limit)),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = [line for line in r.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"Error: disk full in stage {stage!r} while writing {out}"), last
    assert last.endswith("free space and run the same command again: it resumes there"), last
    print(last)
    assert not (out / ".lock").exists()
    if stage != "report":
        assert json.loads((out / "stages" / f"{stage}.json").read_text())["status"] == "running"
    r = subprocess.run([*CLI, *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "report.md").is_file() and json.loads((out / "report.json").read_text())["arms"]
    assert not list(out.rglob(".*tmp*")), list(out.rglob(".*tmp*"))  # no temporary file left behind


def _stop_while(cmd, out, stage, signum, ready=None, timeout=600):
    """Start ``cmd``, wait until ``stage`` runs (and ``ready()``, if given), send ``signum``; returns
    (the finished process's stderr, its exit code, seconds from the signal to its exit)."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    record, t0 = out / "stages" / f"{stage}.json", time.time()

    def running():
        try:
            return json.loads(record.read_text())["status"] == "running"
        except (OSError, ValueError, KeyError):
            return False

    while not (running() and (ready is None or ready())):
        assert p.poll() is None, f"finished before {stage} could be stopped: {p.stderr.read()[-3000:]}"
        assert time.time() - t0 < timeout
        time.sleep(0.1)
    time.sleep(0.5)
    sent = time.time()
    p.send_signal(signum)
    _, err = p.communicate(timeout=120)
    return err, p.returncode, time.time() - sent


def _grid_started(out):
    return lambda: (out / "generator" / "samples").is_dir() and any((out / "generator" / "samples").iterdir())


@pytest.mark.parametrize("stage, signum", [
    ("generator", signal.SIGTERM),
    pytest.param("cache", signal.SIGINT, marks=pytest.mark.slow),
    pytest.param("control", signal.SIGTERM, marks=pytest.mark.slow),
])
def test_a_sigterm_or_ctrl_c_stops_any_stage_within_seconds_and_the_same_command_resumes(stage, signum, tmp_path):
    data = tmp_path / "data"
    make_folder(data / "train", counts=(300, 12, 3), size=8)
    make_folder(data / "test", counts=(4, 4, 4), size=8)
    out = tmp_path / "run"
    steps = {"generator": "400", "cache": "3", "control": "3"}[stage]
    epochs = {"generator": "1", "cache": "1", "control": "200"}[stage]
    args = [*_run_args(data, out)[:-len(TINY)], "--preset", "tiny", "--gen-steps", steps, "--classifier-epochs", epochs,
            "--seeds", "0", "--device", "cpu", "--no-progress"]
    err, code, seconds = _stop_while([*CLI, *args], out, stage, signum,
                                     ready=_grid_started(out) if stage == "generator" else None)
    name = signal.Signals(signum).name
    assert code == 128 + signum, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last == f"Stopped by {name} in stage {stage!r}; what was written is kept and the same command resumes.", last
    assert seconds < 10, f"{seconds:.1f} s from the {name} to the exit"
    assert not (out / ".lock").exists()
    assert json.loads((out / "stages" / f"{stage}.json").read_text())["status"] == "running"
    r = subprocess.run([*CLI, *args], env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"[{stage}] resuming" in r.stdout, r.stdout[-3000:]
    assert (out / "report.md").is_file()
    print(f"{stage}: stopped {seconds:.1f} s after the {name}")
