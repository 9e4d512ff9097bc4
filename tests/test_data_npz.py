"""The npz format's one writer: what it writes reads back through the one reader, a write is whole or
absent, and a file torn by a kill is told apart (and rewritten by the benchmark that reuses one)."""
import sys
from pathlib import Path

import numpy as np
import pytest

from cbdm_aug.data.npz import is_whole, load_npz, write_npz


def _arrays(n=12, size=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8), np.arange(n) % classes


def test_what_write_npz_writes_reads_back_through_load_npz_with_both_splits_and_the_class_names(tmp_path):
    x, y = _arrays()
    path = write_npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:3], y_test=y[:3], class_names=["a", "b", "c"])
    train, test = load_npz(path, "train"), load_npz(path, "test")
    assert np.array_equal(train.images, x) and np.array_equal(train.labels, y) and train.class_names == ["a", "b", "c"]
    assert np.array_equal(test.images, x[:3]) and test.class_names == ["a", "b", "c"]
    assert is_whole(path)


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_behind(tmp_path, monkeypatch):
    x, y = _arrays()
    path = write_npz(tmp_path / "d.npz", x_train=x, y_train=y)

    def killed(*a, **k):
        raise KeyboardInterrupt  # a stop mid-write

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        write_npz(path, x_train=x[:2], y_train=y[:2])
    assert len(load_npz(path)) == len(y) and sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_a_split_needs_both_its_images_and_its_labels(tmp_path):
    x, y = _arrays()
    with pytest.raises(ValueError, match="y_test"):
        write_npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x)
    with pytest.raises(ValueError, match="no split"):
        write_npz(tmp_path / "d.npz", class_names=["a"])


def test_a_file_torn_by_a_kill_is_not_whole_and_the_oracle_split_writes_it_again(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    import tail_gain

    x, y = _arrays(n=60, classes=3)
    data = write_npz(tmp_path / "full.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    out = tmp_path / "oracle8.npz"
    out.write_bytes(data.read_bytes()[:len(data.read_bytes()) // 2])  # what a kill left under the old writer
    assert not is_whole(out)
    tail_gain.oracle_npz(str(data), ("exp", 4, 20, 0), 8, out)
    assert is_whole(out) and np.bincount(load_npz(out).labels).min() >= 8
