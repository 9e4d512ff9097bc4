"""The latent cache of a latent generator: the training images encoded once by the autoencoder.

    RUN_DIR/latents.h5
      /mean    float32 (N, 2, c, h, w)   posterior mean (AutoencoderTiny: the latent) of view 0, the
                                         image as it is, and view 1, its horizontal mirror
      /logvar  float32 (N, 2, c, h, w)   posterior log-variance (AutoencoderKL only)
      /labels  int64 (N,)
      attrs    format, format_version, autoencoder (its record: path, class, config, weights hash),
               data_sha256 (of the images and labels), image_shape, batch_size, num_done, complete

Both mirrors are cached, and the posterior rather than one draw from it, so that training still sees
fresh views: a random flip picks a view and z is drawn from N(mean, exp(logvar)) at every step
(``diffusion.autoencoder.to_latent``). Caching one draw of one flip per image would freeze a 5-image
class at 5 views. Latents are unscaled; the scaling factor is applied at training time.

Encoding writes whole batches in order and flushes after each, so a killed encode resumes from
``num_done`` when rerun; batches always start at multiples of the stored batch size, so the resumed
file holds exactly the latents an uninterrupted run writes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from cbdm_aug.atomic import atomic_path
from cbdm_aug.diffusion.autoencoder import AutoencoderError, AutoencoderRecord, encode_moments

log = logging.getLogger(__name__)

FORMAT = "cbdm-aug-latents"
FORMAT_VERSION = 1
LATENTS_NAME = "latents.h5"
ENCODE_BATCH = 16  # images per encoder call (x2 for the mirrors): bounded memory at 256 px on a CPU


@dataclass(frozen=True)
class LatentSet:
    """The cached latents of a training set: ``mean`` and ``logvar`` (None without a posterior) are
    float32 (N, 2, c, h, w), view 1 the mirror of view 0; ``labels`` int64 (N,)."""

    mean: torch.Tensor
    logvar: torch.Tensor | None
    labels: torch.Tensor

    @property
    def moments(self) -> torch.Tensor:
        """float32 (N, 2, c or 2c, h, w): mean, then log-variance along the channels where there is one."""
        return self.mean if self.logvar is None else torch.cat([self.mean, self.logvar], dim=2)


def data_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """What identifies the training set the latents were encoded from."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(images), np.ascontiguousarray(labels, dtype=np.int64)):
        h.update(json.dumps([str(a.dtype), list(a.shape)]).encode())
        h.update(a.data)
    return h.hexdigest()


def _expected(record: AutoencoderRecord, images: np.ndarray, labels: np.ndarray) -> dict:
    return {"autoencoder": json.dumps(record.to_json(), sort_keys=True), "data_sha256": data_sha256(images, labels),
            "image_shape": json.dumps(list(images.shape[1:]))}


def _create(path: Path, n: int, latent_shape: tuple, posterior: bool, attrs: dict, labels, batch_size: int) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in ("mean", "logvar") if posterior else ("mean",):
            f.create_dataset(name, shape=(n, 2, *latent_shape), dtype=np.float32)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, **attrs, "batch_size": batch_size,
                        "num_done": 0, "complete": False})


def _resumable(path: Path, expected: dict) -> int:
    """Images already encoded in ``path``, or an error naming what differs from this run."""
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError:
        raise AutoencoderError(f"{path}: unreadable latent cache; delete it to encode again") from None
    if attrs.get("format") != FORMAT or int(attrs.get("format_version", 0)) > FORMAT_VERSION:
        raise AutoencoderError(f"{path}: not a latent cache this cbdm-aug reads; delete it to encode again")
    what = {"autoencoder": "autoencoder", "data_sha256": "training set", "image_shape": "image size"}
    differ = [what[k] for k in expected if attrs.get(k) != expected[k]]
    if differ:
        raise AutoencoderError(f"{path}: latents of another {' and '.join(differ)}; delete it to encode again")
    return int(attrs["num_done"])


def encode_latents(path: str | os.PathLike, vae, record: AutoencoderRecord, images: np.ndarray, labels: np.ndarray,
                   *, batch_size: int = ENCODE_BATCH, progress: bool = True, on_batch=None) -> Path:
    """Encode ``images`` (uint8 (N, H, W, C)) and their mirrors into the latent cache ``path``, or finish
    a partial one made from the same images and autoencoder. ``on_batch(num_done)`` runs after each
    batch is on disk. Encodes on the autoencoder's device."""
    path, expected = Path(path), _expected(record, images, labels)
    if path.exists():
        done = _resumable(path, expected)
        with h5py.File(path, "r") as f:
            batch_size, complete = int(f.attrs["batch_size"]), bool(f.attrs["complete"])
        if complete:
            return path
        log.info("resuming the latent encoding of %s at image %d of %d", path, done, len(images))
    else:
        size = images.shape[1] // record.factor
        _create(path, len(images), (record.latent_channels, size, size), record.has_posterior, expected, labels,
                batch_size)
        done = 0
    _encode_from(path, vae, images, done, batch_size, progress, on_batch)
    return path


def _encode_from(path: Path, vae, images: np.ndarray, done: int, batch_size: int, progress: bool, on_batch) -> None:
    device = next(vae.parameters()).device
    bar = None
    if progress:
        from cbdm_aug.progress import counter

        bar = counter(len(images), "encode latents", "img", initial=done)
    try:
        with h5py.File(path, "r+") as f:
            for i in range(done, len(images), batch_size):
                j = min(i + batch_size, len(images))
                x = torch.from_numpy(images[i:j]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
                mean, logvar = encode_moments(vae, torch.cat([x, x.flip(-1)]))
                for name, m in (("mean", mean), ("logvar", logvar)):
                    if m is not None:
                        f[name][i:j] = m.view(2, j - i, *m.shape[1:]).transpose(0, 1).cpu().numpy()
                f.flush()
                f.attrs["num_done"] = j
                f.flush()
                if bar is not None:
                    bar.update(j - i)
                if on_batch is not None:
                    on_batch(j)
            f.attrs["complete"] = True
    finally:
        if bar is not None:
            bar.close()


def read_latents(path: str | os.PathLike) -> LatentSet:
    """The latents of a complete latent cache."""
    with h5py.File(path, "r") as f:
        if not bool(f.attrs.get("complete")):
            raise AutoencoderError(f"{path}: the latent encoding is unfinished; rerun the command to finish it")
        mean = torch.from_numpy(f["mean"][...])
        logvar = torch.from_numpy(f["logvar"][...]) if "logvar" in f else None
        labels = torch.from_numpy(f["labels"][...])
    return LatentSet(mean, logvar, labels)
