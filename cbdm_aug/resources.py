"""How much of the machine a piece of work used: its peak resident memory."""
from __future__ import annotations

import os
from pathlib import Path


def peak_rss():
    """Starts measuring this process's peak resident memory; returns a function that gives it in MB.
    On Linux the kernel's peak (VmHWM) is reset here, so it is the peak of what follows; elsewhere it
    is the process's peak so far (``ru_maxrss``)."""
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        reset = True
    except OSError:
        reset = False

    def peak() -> float | None:
        if reset:
            try:
                line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
                return round(int(line.split()[1]) / 1024, 1)
            except (OSError, StopIteration, ValueError):
                pass
        try:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
            return round(kb / (1 << 20 if os.uname().sysname == "Darwin" else 1024), 1)
        except (ImportError, OSError):
            return None

    return peak
