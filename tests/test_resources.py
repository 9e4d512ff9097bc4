"""peak_rss measures the peak of what follows it, not of the whole process."""
import os

import pytest

from cbdm_aug.resources import peak_rss


def _rss_mb() -> float:
    from pathlib import Path

    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_a_stage_peak_memory_is_the_peak_of_what_follows_not_of_the_process():
    big = bytearray(300 << 20)  # 300 MB touched (and given back) before the stage starts
    big[::4096] = b"x" * len(big[::4096])
    del big
    before = _rss_mb()
    peak = peak_rss()
    small = bytearray(30 << 20)
    small[::4096] = b"y" * len(small[::4096])
    mb = peak()
    assert before + 25 < mb < before + 100, (before, mb)
