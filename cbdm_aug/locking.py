"""One live writer per output: a lock file that names its holder (pid, host, start time, command).

``with output_lock(path, "cache"):`` creates ``path`` with ``O_CREAT | O_EXCL``, so of two processes
exactly one gets it, and the other is refused with a ``LockError`` that names the live holder. A lock
whose holder is gone (its pid is not alive on this host, or that pid now belongs to a process that
started later) is taken over and reported. A cache's lock is ``<cache>.lock`` beside the file; a run
folder's is ``<dir>/.lock``.

Hand-written rather than ``filelock``: the refusal must name the live process (pid and host), and
``filelock`` records neither, so it can neither say who holds a lock nor tell a dead holder's lock
from a live one on a shared file system. The take-over itself is serialised by an ``fcntl.flock`` on
a side file (released by the kernel if the taker dies), so two processes that find the same stale
lock do not both take it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from cbdm_aug.errors import UserError

log = logging.getLogger(__name__)


class LockError(UserError):
    """Another live process writes this output."""


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None where /proc is absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5); the name in (...) may hold spaces


def _alive(holder: dict) -> bool:
    """Whether the process that wrote ``holder`` still runs (on this host; another host's counts as alive)."""
    if holder.get("host") != socket.gethostname():
        return True  # cannot look: never take over another machine's lock
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    started = holder.get("started_ticks")
    return started is None or process_start_time(pid) in (None, started)  # a reused pid is another process


def read_holder(lock: str | os.PathLike) -> dict | None:
    """The holder record of a lock file; None if there is none; ``{}`` if it is unreadable."""
    try:
        return json.loads(Path(lock).read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder["time"])) if holder.get("time") else "?"
    cmd = f", `{holder['command']}`" if holder.get("command") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {when}{cmd})"


def live_holder(lock: str | os.PathLike) -> dict | None:
    """The holder of ``lock`` if that process is still alive, else None."""
    holder = read_holder(lock)
    return holder if holder and _alive(holder) else None


def ensure_free(output: str | os.PathLike, *, folder: bool, what: str = "output") -> None:
    """``LockError`` now if a live process holds ``output``'s lock (checked again when taking it)."""
    lock = lock_path(output, folder)
    holder = live_holder(lock)
    if holder:
        raise LockError(_in_use(output, what, holder, lock))


def _in_use(output, what: str, holder: dict, lock: Path) -> str:
    return (f"{output}: this {what} is in use by {describe(holder)}; wait for it to finish "
            f"or stop it (its lock: {lock})")


def lock_path(output: str | os.PathLike, folder: bool) -> Path:
    """``<dir>/.lock`` for a folder, ``<file>.lock`` for a file."""
    output = Path(output)
    return output / ".lock" if folder else output.with_name(output.name + ".lock")


def _create(lock: Path, record: dict) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record))
    return True


def _take_over(lock: Path, stale: dict, record: dict) -> bool:
    """Replace a stale lock by ours, one taker at a time; False if someone else got there first."""
    import fcntl

    side_path = lock.with_name(lock.name + ".takeover")
    with open(side_path, "a") as side:
        fcntl.flock(side, fcntl.LOCK_EX)
        if read_holder(lock) != stale:  # changed since we looked: another process took it
            return False
        lock.unlink(missing_ok=True)
        taken = _create(lock, record)
        # Not left behind. Removed while held: a taker still waiting on this file, or one that opens a
        # new one, re-reads the holder above, finds ours instead of the stale one, and backs off.
        side_path.unlink(missing_ok=True)
        return taken


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, *, folder: bool, what: str = "output", command: str | None = None,
                echo=None):
    """Hold the lock of ``output`` (a folder or a file) for the ``with`` block; ``LockError`` if a
    live process holds it. ``echo`` (default: the log) reports a stale lock taken over."""
    lock = lock_path(output, folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
              "started_ticks": process_start_time(os.getpid()),
              "command": command if command is not None else " ".join(["cbdm-aug", *sys.argv[1:]])}
    for _ in range(3):
        if _create(lock, record):
            break
        holder = read_holder(lock)
        if holder is None:
            continue  # released between our two looks
        if holder and _alive(holder):
            raise LockError(_in_use(output, what, holder, lock))
        if _take_over(lock, holder, record):
            (echo or log.warning)(f"took over the lock of {output}: its holder {describe(holder)} is no longer "
                                  "running" if holder else f"took over an unreadable lock file {lock}")
            break
    else:
        raise LockError(f"{output}: could not take its lock {lock}; another process keeps taking it")
    try:
        yield lock
    finally:
        if read_holder(lock) == record:
            lock.unlink(missing_ok=True)
