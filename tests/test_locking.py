"""One live writer per run folder and per cache: the lock file, and every command that writes."""
import json
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from helpers import run_cli

from cbdm_aug.cache.reader import read_header
from cbdm_aug.cache.schema import CacheError
from cbdm_aug.locking import LockError, lock_path, output_lock, process_start_time, read_holder


@pytest.fixture
def live_pid():
    """A process that stays alive for the test: the lock's 'other writer'."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p.pid
    p.kill()
    p.wait()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def hold(output, pid, folder=False, ticks=None):
    """Write the lock file that process ``pid`` would hold on ``output``."""
    lock = lock_path(output, folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "time": time.time(),
                                "started_ticks": ticks if ticks is not None else process_start_time(pid),
                                "command": "cbdm-aug generate ..."}))
    return lock


def test_a_second_writer_is_refused_while_the_first_holds_the_lock_and_may_write_after(tmp_path):
    out = tmp_path / "synth.h5"
    with output_lock(out, folder=False, what="cache") as lock:
        assert read_holder(lock)["pid"] == __import__("os").getpid()
        with pytest.raises(LockError, match=r"in use by pid \d+ on host"):
            with output_lock(out, folder=False, what="cache"):
                pass
    assert not lock.exists()  # released at the end of the block
    with output_lock(out, folder=False):
        pass


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError):
        with output_lock(tmp_path / "run", folder=True):
            raise RuntimeError("boom")
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_live_holder_is_named_by_pid_and_host(tmp_path, live_pid):
    hold(tmp_path / "c.h5", live_pid)
    with pytest.raises(LockError) as e:
        with output_lock(tmp_path / "c.h5", folder=False, what="cache"):
            pass
    assert f"pid {live_pid} on host {socket.gethostname()}" in str(e.value) and "\n" not in str(e.value)


def test_a_lock_left_by_a_dead_process_is_taken_over_and_reported(tmp_path):
    dead = _dead_pid()
    lock = hold(tmp_path / "c.h5", dead, ticks="1")
    said = []
    with output_lock(tmp_path / "c.h5", folder=False, echo=said.append):
        assert read_holder(lock)["pid"] != dead
    assert len(said) == 1 and f"pid {dead}" in said[0] and "no longer running" in said[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the lock nor the takeover file is left


def test_a_pid_reused_by_a_later_process_counts_as_a_dead_holder(tmp_path, live_pid):
    hold(tmp_path / "c.h5", live_pid, ticks="0")  # the recorded holder started at boot; this pid did not
    said = []
    with output_lock(tmp_path / "c.h5", folder=False, echo=said.append):
        pass
    assert said and "no longer running" in said[0]


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    lock = lock_path(tmp_path / "c.h5", False)
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": time.time()}))
    with pytest.raises(LockError, match="on host elsewhere"):
        with output_lock(tmp_path / "c.h5", folder=False):
            pass


def _no_overwrite_advice(err):
    assert "--overwrite" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_generate_refuses_a_cache_that_a_live_generate_writes_and_leaves_the_file_alone(tiny_run, tmp_path, capsys, live_pid):
    out = tmp_path / "synth.h5"
    out.write_bytes(b"being written")
    hold(out, live_pid)
    code, _, err = run_cli(["generate", tiny_run, "--out", out, "--per-class", 1, "--steps", 2, "--device", "cpu",
                            "--overwrite"], capsys)
    assert code != 0 and f"pid {live_pid}" in err
    _no_overwrite_advice(err)
    assert out.read_bytes() == b"being written"


def test_generate_takes_over_a_stale_lock_and_finishes(tiny_run, tmp_path, capsys):
    out = tmp_path / "synth.h5"
    hold(out, _dead_pid(), ticks="1")
    code, stdout, err = run_cli(["generate", tiny_run, "--out", out, "--per-class", 1, "--steps", 2, "--device", "cpu"], capsys)
    assert code == 0, err
    assert "took over the lock" in stdout and read_header(out)["complete"]
    assert not lock_path(out, False).exists()


@pytest.mark.parametrize("command", ["fit-generator", "train-classifier", "filter-cache", "merge-shards", "run"])
def test_every_writing_command_refuses_an_output_in_use_in_one_line(command, tmp_path, capsys, live_pid):
    out = tmp_path / ("out" if command in ("fit-generator", "train-classifier", "run") else "out.h5")
    args = {"fit-generator": ["fit-generator", "digits", "--out", out, "--resume"],
            "train-classifier": ["train-classifier", "recipes/mnist-lt-baseline.yaml", "--out", out],
            "filter-cache": ["filter-cache", tmp_path / "in.h5", "--out", out, "--real", "digits"],
            "merge-shards": ["merge-shards", out, tmp_path / "a.h5"],
            "run": ["run", "digits", "--holdout-per-class", 5, "--out", out]}[command]
    hold(out, live_pid, folder=out.suffix != ".h5")
    code, _, err = run_cli(args, capsys)
    assert code != 0 and f"in use by pid {live_pid} on host {socket.gethostname()}" in err
    _no_overwrite_advice(err)


def test_a_cache_in_use_gets_its_own_message_never_the_advice_to_overwrite(tmp_path, live_pid):
    out = tmp_path / "synth.h5"
    out.write_bytes(b"not yet an HDF5 file")  # what a reader may see of a file being created
    hold(out, live_pid)
    with pytest.raises(CacheError, match=f"in use, pid {live_pid}") as e:
        read_header(out)
    assert "--overwrite" not in str(e.value)


def test_a_cache_open_for_writing_in_another_process_is_reported_in_use(tmp_path):
    out = tmp_path / "synth.h5"
    with h5py.File(out, "w") as f:
        f["x"] = np.zeros(3)
    writer = subprocess.Popen([sys.executable, "-c", f"import h5py, time; f = h5py.File({str(out)!r}, 'a'); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(CacheError) as e:
            read_header(out)
        assert "in use" in str(e.value) and "--overwrite" not in str(e.value)
    finally:
        writer.kill()
        writer.wait()
