"""Whole-file writes: the old file or the new one, never half of one, no temporary file left, and a
write error that names the file. Each writer that replaces a file whole is stopped mid-write here."""
import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cbdm_aug.atomic import atomic_dir, atomic_path, write_text_atomic
from cbdm_aug.stopping import Stopped


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


def test_a_writer_killed_with_sigkill_mid_write_leaves_the_old_file_and_the_next_write_removes_its_temporary(
        tmp_path):
    target = tmp_path / "report.md"
    write_text_atomic(target, "old")
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from cbdm_aug.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp, open(tmp, "w") as f:
            f.write("half of the new")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        child.kill()
    assert target.read_text() == "old"
    assert len(list(tmp_path.iterdir())) == 2  # what a SIGKILL cannot clean: the killed writer's temporary
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_folder_written_whole_appears_whole_or_not_at_all(tmp_path):
    with pytest.raises(Stopped):
        with atomic_dir(tmp_path / "snap") as tmp:
            (tmp / "a.txt").write_text("a")
            raise Stopped(signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(tmp_path / "snap") as tmp:
        (tmp / "a.txt").write_text("a")
    assert [p.name for p in tmp_path.iterdir()] == ["snap"] and (tmp_path / "snap" / "a.txt").read_text() == "a"


def _stop_after(real, calls: int = 0):
    """``real``, which on call number ``calls`` + 1 first does its work, then is stopped (a SIGTERM)."""
    seen = []

    def stopped(*args, **kwargs):
        seen.append(1)
        out = real(*args, **kwargs)
        if len(seen) > calls:
            raise Stopped(signal.SIGTERM)
        return out

    return stopped


def test_the_demo_split_stopped_mid_write_keeps_the_old_split_and_leaves_no_temporary(tmp_path, monkeypatch):
    from cbdm_aug.demo import DemoConfig, build_split

    split = tmp_path / "data" / "split.npz"
    split.parent.mkdir()
    split.write_bytes(b"old")
    monkeypatch.setattr(np, "savez", _stop_after(np.savez))  # the whole npz is written, then the stop
    with pytest.raises(Stopped):
        build_split(DemoConfig(holdout_per_class=5, max_per_class=20), tmp_path, echo=lambda *_: None)
    assert split.read_bytes() == b"old" and [p.name for p in split.parent.iterdir()] == ["split.npz"]


def _cache(path, n=6):
    from cbdm_aug.cache.writer import write_cache

    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    return write_cache(path, images, np.arange(n) % 2, class_names=["a", "b"])


def test_a_cache_stopped_while_it_is_created_or_merged_keeps_the_old_file_and_leaves_no_temporary(
        tmp_path, monkeypatch):
    import cbdm_aug.cache.writer as writer

    old = _cache(tmp_path / "cache.h5").read_bytes()
    monkeypatch.setattr(writer, "_package_version", _stop_after(writer._package_version))  # inside the HDF5 write
    with pytest.raises(Stopped):
        _cache(tmp_path / "cache.h5")
    assert (tmp_path / "cache.h5").read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["cache.h5"]
    monkeypatch.undo()

    shards = []
    for i in range(2):
        p = tmp_path / f"shard{i}.h5"
        writer.create_cache(p, labels=[0, 1], seeds=[2 * i, 2 * i + 1], image_shape=(8, 8, 1), class_names=["a", "b"],
                            generator={}, sampler={}, plan={}, shard={"index": i, "count": 2})
        with writer.CacheWriter(p) as w:
            w.write(np.zeros((2, 8, 8, 1), np.uint8))
            w.finish()
        shards.append(p)
    monkeypatch.setattr(writer.CacheWriter, "write", _stop_after(writer.CacheWriter.write, calls=1))
    with pytest.raises(Stopped):
        writer.merge_shards(tmp_path / "cache.h5", shards, overwrite=True)
    assert (tmp_path / "cache.h5").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.h5", "shard0.h5", "shard1.h5"]


def test_the_filter_stopped_mid_write_keeps_the_old_output_and_leaves_no_temporary(tmp_path, monkeypatch):
    from helpers import stub_space

    import cbdm_aug.cache.writer as writer
    from cbdm_aug.evaluate.filter import filter_cache

    _cache(tmp_path / "syn.h5", n=8)
    (tmp_path / "out.h5").write_bytes(b"old")
    train = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    monkeypatch.setattr(writer.CacheWriter, "write", _stop_after(writer.CacheWriter.write))
    space = stub_space()
    space.class_names = ["a", "b"]
    with pytest.raises(Stopped):
        filter_cache(tmp_path / "syn.h5", tmp_path / "out.h5", space, train, np.array([0, 0, 1, 1]),
                     confidence=0.0, near_copy_ratio=0.0, overwrite=True, batch_size=2, progress=False)
    assert (tmp_path / "out.h5").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5", "syn.h5"]


def test_a_checkpoint_that_fails_mid_write_keeps_last_and_previous_and_leaves_no_temporary(tmp_path, monkeypatch):
    import torch

    from cbdm_aug.generator.checkpoints import KeepPreviousCheckpointIO, checkpoint_step

    io = KeepPreviousCheckpointIO()
    for step in (1, 2):
        io.save_checkpoint({"global_step": step}, tmp_path / "last.ckpt")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)  # after the bytes are written, before the rename
    with pytest.raises(OSError) as e:
        io.save_checkpoint({"global_step": 3, "w": torch.zeros(3)}, tmp_path / "last.ckpt")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "last.ckpt")
    assert checkpoint_step(tmp_path / "last.ckpt") == 2 and checkpoint_step(tmp_path / "previous.ckpt") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "previous.ckpt"]
