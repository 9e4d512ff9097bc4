"""Multi-process runs on CPU: fit-generator under Lightning DDP (gloo), generation as concurrent
shards, and the classifier sampler under a real 2-process torch.distributed group."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from helpers import CLI, ENV, cache_arrays, make_folder
from helpers import FAST_FIT_NO_HFLIP as FAST
from safetensors.torch import load_file

from cbdm_aug import load_generator

# Lightning's ddp launcher re-runs sys.argv[0] in its child processes, so the probe must be a real
# script. It records, per rank, the step training starts from, every file our code writes, and the
# final weights, then runs the ordinary CLI.
PROBE = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    dump = Path(os.environ["CBDM_TEST_DUMP"])
    dump.mkdir(parents=True, exist_ok=True)
    rank = lambda: os.environ.get("LOCAL_RANK", "0")

    import cbdm_aug.generator.fit as fit, cbdm_aug.generator.run_dir as run_dir
    real_write = run_dir.write_bytes_atomic
    def write(path, data, **kwargs):
        with open(dump / f"writes{rank()}.txt", "a") as f:
            f.write(Path(path).name + "\\n")
        real_write(path, data, **kwargs)
    fit.write_bytes_atomic = run_dir.write_bytes_atomic = write

    from cbdm_aug.generator.module import CBDMModule
    from safetensors.torch import save_file
    def on_train_start(self):
        with open(dump / f"start{self.global_rank}.txt", "a") as f:
            f.write(f"{self.global_step}\\n")
    def on_train_end(self):
        state = {f"unet.{k}": v for k, v in self.unet.state_dict().items()}
        state.update({f"ema.{k}": v for k, v in self.ema_unet.state_dict().items()})
        save_file({k: v.detach().contiguous() for k, v in state.items()}, dump / f"rank{self.global_rank}.safetensors")
    CBDMModule.on_train_start, CBDMModule.on_train_end = on_train_start, on_train_end

    from cbdm_aug.cli import main
    main()
''')


def probe_command(tmp_path, *args):
    script = tmp_path / "probe_fit.py"
    script.write_text(PROBE)
    return [sys.executable, str(script), "fit-generator", *map(str, args)]


def run_step(out) -> int:
    path = out / "generator.json"
    return json.loads(path.read_text())["step"] if path.exists() else 0


@pytest.mark.slow
def test_fit_generator_under_ddp_agrees_on_weights_writes_once_and_resumes_after_a_kill(tmp_path):
    data = make_folder(tmp_path / "data", counts=(6, 3, 2), size=8)  # 11 images: < batch x world per rank
    out, dump = tmp_path / "run", tmp_path / "dump"
    ddp = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    cmd = probe_command(tmp_path, data, "--out", out, "--max-steps", 4, "--checkpoint-every", 2, *FAST, *ddp)
    r = subprocess.run(cmd, env=dict(ENV, CBDM_TEST_DUMP=str(dump)), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]

    ranks = [load_file(dump / f"rank{i}.safetensors") for i in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for k in ranks[0]:
        torch.testing.assert_close(ranks[0][k], ranks[1][k], rtol=0, atol=0, msg=k)
    assert not (dump / "writes1.txt").exists(), (dump / "writes1.txt").read_text()
    assert {"run.json", "generator.json", "ema.safetensors"} <= set((dump / "writes0.txt").read_text().split())
    gen = load_generator(out)
    assert gen.meta["step"] == 4 and gen.meta["finished"] is True
    exported = {k[4:]: v for k, v in ranks[0].items() if k.startswith("ema.")}
    for k, v in gen.unet.state_dict().items():
        torch.testing.assert_close(v, exported[k], rtol=0, atol=0)

    # Kill the whole job (launcher and child) mid-run, then resume with more steps.
    dump2 = tmp_path / "dump2"
    cmd = probe_command(tmp_path, data, "--out", out, "--max-steps", 400, "--checkpoint-every", 2,
                        "--resume", *FAST, *ddp)
    p = subprocess.Popen(cmd, env=dict(ENV, CBDM_TEST_DUMP=str(dump2)), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while run_step(out) < 8:
        assert p.poll() is None and time.time() < deadline, "the resumed run ended before it could be killed"
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    killed_at = run_step(out)
    load_generator(out)  # what the kill left is loadable
    dump3 = tmp_path / "dump3"
    cmd = probe_command(tmp_path, data, "--out", out, "--max-steps", killed_at + 4, "--checkpoint-every", 2,
                        "--resume", *FAST, *ddp)
    r = subprocess.run(cmd, env=dict(ENV, CBDM_TEST_DUMP=str(dump3)), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    starts = [int((dump3 / f"start{i}.txt").read_text().split()[-1]) for i in (0, 1)]
    assert starts[0] == starts[1] >= killed_at - 2 and starts[0] > 4  # the last checkpoint, not step 0
    assert load_generator(out).meta["step"] == killed_at + 4


@pytest.mark.slow
def test_two_concurrent_shard_processes_merge_into_the_single_process_cache(tiny_run, tmp_path):
    # Batch size 1: every image is sampled alone, so sharding cannot change a single bit.
    gen = [*CLI, "generate", str(tiny_run), "--per-class", "4", "--steps", "3", "--batch-size", "1",
           "--device", "cpu"]
    procs = [subprocess.Popen([*gen, "--out", str(tmp_path / f"s{i}.h5"), "--shard", f"{i}/2"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1)]
    single = subprocess.run([*gen, "--out", str(tmp_path / "one.h5")], env=ENV, capture_output=True, timeout=240)
    assert single.returncode == 0, single.stderr
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    r = subprocess.run([*CLI, "merge-shards", str(tmp_path / "all.h5"), str(tmp_path / "s1.h5"),
                        str(tmp_path / "s0.h5")], env=ENV, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for a, b in zip(cache_arrays(tmp_path / "one.h5"), cache_arrays(tmp_path / "all.h5")):
        np.testing.assert_array_equal(a, b)


class _Labelled:
    """What the sampler needs of a RealSyntheticDataset: labels and is_synthetic flags."""

    def __init__(self):
        self.labels = np.array([0] * 12 + [1] * 4 + [2] * 1 + [1] * 3 + [2] * 5)
        self.is_synthetic = np.array([False] * 17 + [True] * 8)
        self.class_names = ["head", "mid", "tail"]

    def __len__(self):
        return len(self.labels)


def _sampler_rank(rank, world, init_file, out_dir):
    import torch.distributed as dist

    from cbdm_aug.plugin.sampler import BalancedSyntheticSampler

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        sampler = BalancedSyntheticSampler(_Labelled(), num_samples=36, seed=3)  # world read from dist
        assert (sampler.num_replicas, sampler.rank) == (world, rank)
        result = {}
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(range(len(_Labelled())), batch_size=4, sampler=sampler)
            mine = torch.cat(list(loader)).tolist()
            shards = [None] * world
            dist.all_gather_object(shards, mine)
            result[epoch] = {"shards": shards, "plan": sampler.plan().tolist()}
        if rank == 0:
            (out_dir / "result.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_sampler_gives_two_gloo_ranks_disjoint_shares_of_one_epoch_plan(tmp_path):
    torch.multiprocessing.spawn(_sampler_rank, args=(2, tmp_path / "init", tmp_path), nprocs=2, join=True)
    result = json.loads((tmp_path / "result.json").read_text())
    for r in result.values():
        a, b = r["shards"]
        plan = r["plan"]
        assert len(a) == len(b) == 18
        assert a == plan[0::2] and b == plan[1::2]  # disjoint positions of one plan ...
        assert sorted(a + b) == sorted(plan)       # ... whose union is the whole plan
    assert result["0"]["plan"] != result["1"]["plan"]
