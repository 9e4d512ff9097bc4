"""``cbdm-aug generate`` under ``torchrun``: one shard per rank, joined on rank 0.

A launcher sets ``RANK`` and ``WORLD_SIZE``; each rank then writes shard ``RANK/WORLD_SIZE`` of the
plan to its own file beside ``--out`` (``synth.shard0of4.h5``), resumable like any shard. Rank 0
waits for the others (a gloo barrier, when the launcher gave ``MASTER_ADDR``), then joins the
shards into ``--out`` if it sees them all complete, or prints the one ``merge-shards`` command that
does (ranks on other machines write to disks rank 0 may not see).
"""
from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path

from cbdm_aug.errors import ConfigError

log = logging.getLogger(__name__)


def launch_rank() -> tuple[int, int] | None:
    """(rank, world size) of this process in a multi-process launch, or None outside one."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"RANK={os.environ.get('RANK')!r} and WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                          f"must be integers") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK must be in [0, {world}) for WORLD_SIZE={world}, got {rank}")
    return rank, world


def rank_device():
    """``cuda:LOCAL_RANK`` when there are GPUs, so ranks on one machine do not share one; else cpu."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def shard_path(out: Path, index: int, count: int) -> Path:
    return out.with_name(f"{out.stem}.shard{index}of{count}{out.suffix}")


def wait_for_all_ranks(timeout_s: float = 3600.0) -> bool:
    """A barrier across the launch; False without a rendezvous address or when it fails."""
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        return False
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
        dist.barrier()
        return True
    except Exception as e:  # noqa: BLE001 - a missing rank means "print the merge command", not a crash
        log.warning("could not wait for the other ranks (%s)", e)
        return False
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def join_on_rank_zero(out: Path, count: int, overwrite: bool) -> tuple[bool, str]:
    """Join the ``count`` shards of ``out`` into ``out`` if all are complete (then delete them);
    returns (joined, the line to print)."""
    from cbdm_aug.cache.reader import is_complete
    from cbdm_aug.cache.writer import merge_shards

    shards = [shard_path(out, i, count) for i in range(count)]
    command = f"cbdm-aug merge-shards {out} " + " ".join(map(str, shards))
    missing = [str(s) for s in shards if not is_complete(s)]
    if missing:
        return False, (f"shard(s) {', '.join(missing)} not complete here yet; when every rank has "
                       f"finished, join them with: {command}")
    merge_shards(out, shards, overwrite=overwrite)
    for s in shards:
        s.unlink()
    return True, f"joined {count} shards into {out}"
