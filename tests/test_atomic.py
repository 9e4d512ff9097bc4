"""Whole-file writes: the old file or the new one, never half of one, no temporary file left, and a
write error that names the file."""
import errno

import pytest

from cbdm_aug.atomic import atomic_path, write_text_atomic
from cbdm_aug.pipeline.stages import peak_rss


def test_a_failed_write_keeps_the_old_file_leaves_no_temporary_and_names_the_target(tmp_path):
    target = tmp_path / "report.md"
    write_text_atomic(target, "old")
    with pytest.raises(OSError) as e:
        with atomic_path(target) as tmp, open(tmp, "w") as f:
            f.write("half of the new")
            raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises: no file name
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def _rss_mb() -> float:
    from pathlib import Path

    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="Linux only")
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
