"""Resume checkpoints that a full disk, a kill or later damage cannot cost more than one interval.

Each checkpoint is written whole to a temporary file and renamed over ``last.ckpt``; the one it
replaces is kept as ``previous.ckpt`` (a hard link: no copy). ``--resume`` takes ``last.ckpt``,
or, when that one is unreadable, ``previous.ckpt`` and says so; with neither readable it refuses.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from cbdm_aug.atomic import remove_temporaries, write_bytes_atomic
from cbdm_aug.generator.run_dir import RunDirError

LAST, PREVIOUS = "last.ckpt", "previous.ckpt"


class KeepPreviousCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint atomically and keeps the one it replaces as ``previous.ckpt``."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()  # serialise first: a write error is then a plain OSError with its errno
        torch.save(checkpoint, buffer)
        for target in (path, path.with_name(PREVIOUS)):  # only rank 0 writes: any temporary is stale
            remove_temporaries(target, only_dead=False)
        write_bytes_atomic(path, buffer.getbuffer(), fsync=True, previous=path.with_name(PREVIOUS))

def checkpoint_step(path: Path) -> int | None:
    """The training step stored in a checkpoint, or None if the file is unreadable (truncated or
    corrupt). Reads the pickle only, with tensors memory-mapped and no code run."""
    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - any failure means "not a checkpoint to resume from"
        return None


def resume_checkpoint(directory: Path, echo=print) -> Path | None:
    """The newest readable checkpoint in ``directory`` (None if there is none at all); a fallback
    to the previous one is announced, and unreadable ones with no fallback are a ``RunDirError``."""
    bad = []
    for path in (directory / LAST, directory / PREVIOUS):
        if not path.exists():
            continue
        step = checkpoint_step(path)
        if step is None:
            bad.append(path)
            continue
        if bad:
            echo(f"{bad[0]} is unreadable (truncated or corrupt); falling back to the previous "
                 f"checkpoint {path} (step {step})")
        return path
    if bad:
        raise RunDirError(f"{bad[0]}: unreadable checkpoint (truncated or corrupt) and no earlier readable "
                          f"one; delete {directory} to restart from step 0, or choose another --out")
    return None
