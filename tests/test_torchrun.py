"""`cbdm-aug generate` under torchrun: one shard per rank, joined on rank 0 into the cache that one
process would have written."""
import subprocess
import sys

import numpy as np
import pytest
from helpers import ENV, cache_arrays, run_cli

GENERATE = ["--per-class", "4", "--steps", "3", "--batch-size", "1", "--device", "cpu"]  # batch 1: bitwise equal


def test_ranks_write_one_shard_each_and_rank_zero_joins_them_into_the_single_process_cache(
        tiny_run, tmp_path, capsys, monkeypatch):
    assert run_cli(["generate", tiny_run, "--out", tmp_path / "one.h5", *GENERATE], capsys)[0] == 0
    out = tmp_path / "synth.h5"
    monkeypatch.delenv("MASTER_ADDR", raising=False)  # no rendezvous: rank 0 joins what it sees
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (1, 0):  # rank 0 last, so it finds rank 1's shard complete
        monkeypatch.setenv("RANK", str(rank))
        code, stdout, err = run_cli(["generate", tiny_run, "--out", out, *GENERATE], capsys)
        assert code == 0, err
        assert f"synth.shard{rank}of2.h5" in stdout and f"shard {rank}/2" in stdout
    assert "joined 2 shards into" in stdout and "12 images, complete" in stdout
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["one.h5", "synth.h5"]  # shards removed
    for a, b in zip(cache_arrays(tmp_path / "one.h5"), cache_arrays(out)):
        np.testing.assert_array_equal(a, b)
    code, _, err = run_cli(["generate", tiny_run, "--out", out, *GENERATE], capsys)  # rank 0 again
    assert code != 0 and "complete cache already exists" in err


def test_rank_zero_prints_the_one_merge_command_when_a_shard_is_missing(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, stdout, err = run_cli(["generate", tiny_run, "--out", tmp_path / "synth.h5", *GENERATE], capsys)
    assert code == 0, err
    assert (f"cbdm-aug merge-shards {tmp_path / 'synth.h5'} {tmp_path / 'synth.shard0of2.h5'} "
            f"{tmp_path / 'synth.shard1of2.h5'}") in stdout
    assert not (tmp_path / "synth.h5").exists()


@pytest.mark.slow
def test_generate_under_torchrun_with_two_processes_equals_the_single_process_cache(tiny_run, tmp_path):
    one = subprocess.run([sys.executable, "-m", "cbdm_aug.cli", "generate", str(tiny_run), "--out",
                          str(tmp_path / "one.h5"), *GENERATE], env=ENV, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    r = subprocess.run([*torchrun, "-m", "cbdm_aug.cli", "generate", str(tiny_run), "--out", str(tmp_path / "synth.h5"),
                        *GENERATE], env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "joined 2 shards into" in r.stdout, r.stdout[-3000:]
    assert not list(tmp_path.glob("synth.shard*"))
    for a, b in zip(cache_arrays(tmp_path / "one.h5"), cache_arrays(tmp_path / "synth.h5")):
        np.testing.assert_array_equal(a, b)
