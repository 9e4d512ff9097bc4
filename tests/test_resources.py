"""peak_rss measures the peak of what follows it, not of the whole process."""
import mmap
import os

import pytest

from cbdm_aug.resources import peak_rss


def _rss_mb() -> float:
    from pathlib import Path

    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _touched(nbytes: int) -> mmap.mmap:
    m = mmap.mmap(-1, nbytes)
    for i in range(0, nbytes, 4096):
        m[i] = 1
    return m


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_a_stage_peak_memory_is_the_peak_of_what_follows_not_of_the_process():
    # Fresh anonymous maps, not the heap: after a long test session malloc may serve a bytearray from
    # pages that are already resident, and the peak would not move.
    big = _touched(300 << 20)  # 300 MB touched (and given back) before the stage starts
    big.close()
    before = _rss_mb()
    peak = peak_rss()
    small = _touched(30 << 20)
    mb = peak()
    small.close()
    assert before + 25 < mb < before + 100, (before, mb)
