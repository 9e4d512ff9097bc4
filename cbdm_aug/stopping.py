"""Prompt, resumable stops on SIGTERM and Ctrl-C.

Python turns Ctrl-C into ``KeyboardInterrupt``, which PyTorch Lightning catches: it finishes what it
was doing (a progress grid can take minutes), then calls ``sys.exit(1)``. A SIGTERM, what job
schedulers send, Lightning only logs and notes for its loops to check between batches. Here both
raise ``Stopped`` in the main thread at the next Python bytecode instead: Lightning tears down and
re-raises anything that is not a ``KeyboardInterrupt``, every output is written whole and renamed (or
resumes from what it has), so the same command picks up where it stopped. ``Stopped`` derives from
``BaseException`` so that no ``except Exception`` swallows it.
"""
from __future__ import annotations

import contextlib
import os
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A SIGTERM or Ctrl-C. ``signum`` is the signal; ``stage`` the stage of a run it stopped, if known."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.stage = signum, None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT and SIGTERM raise ``Stopped`` in this process. A forked child (a
    DataLoader worker) gets the default behaviour back, so that its parent, not it, reports the stop."""
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # what a DataLoader worker expects, and ignores
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
