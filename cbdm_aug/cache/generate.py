"""The resumable generation loop: a generator + a plan -> a complete synthetic cache.

Image order is class-major: all images of class 0, then class 1, and so on. Image ``k`` of class
``c`` is sampled from its own seed ``image_seed(seed, c, k)``, a hash of the three numbers, so it
does not depend on the batch size, the shard, the other classes' counts, or how often the run
was interrupted; growing a class's count later keeps its first images.

A run writes images in index order and flushes after every batch (see ``CacheWriter``), so
rerunning the same command resumes from the file's ``num_done``. With the same batch size the
resumed file is bitwise identical to an uninterrupted one, because every batch holds the same
images. A different batch size (or a shard boundary) puts images in other batches; the images are
the same up to float rounding of batched kernels (about 1e-6 on CPU), which a trained model and a
non-chaotic sampler turn into at most one uint8 level here and there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from cbdm_aug.cache.plan import Plan
from cbdm_aug.cache.reader import read_header
from cbdm_aug.cache.schema import RESUME_KEYS, CacheError
from cbdm_aug.cache.writer import CacheWriter, create_cache
from cbdm_aug.diffusion.sampler_settings import SamplerSettings

log = logging.getLogger(__name__)


def image_seed(seed: int, label: int, k: int) -> int:
    """The seed of image ``k`` of class ``label`` in a run with base ``seed``: 63 bits of BLAKE2b."""
    digest = hashlib.blake2b(f"cbdm-aug/{seed}/{label}/{k}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def plan_images(plan: Plan, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 labels and seeds of every image of ``plan``, in cache order (class-major)."""
    labels = np.repeat(np.arange(len(plan.counts), dtype=np.int64), plan.counts)
    seeds = np.array([image_seed(seed, c, k) for c, n in enumerate(plan.counts)
                      for k in range(plan.first(c), plan.first(c) + n)],
                     dtype=np.int64)
    return labels, seeds


def shard_range(total: int, index: int, count: int) -> tuple[int, int]:
    """Global image range [start, stop) of shard ``index`` of ``count``: contiguous, disjoint,
    covering [0, total), sizes differing by at most one."""
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    return index * total // count, (index + 1) * total // count


def generator_identity(meta: dict) -> dict:
    """What identifies a generator: its whole config (model, classes, schedule, ...) and weights hash."""
    return {k: v for k, v in meta.items() if k not in ("format", "format_version")}


def _check_resumable(out: Path, expected: dict) -> int:
    """For an existing ``out``: the number of images already done, or a CacheError saying why not."""
    attrs = read_header(out, require_complete=False)
    if attrs["complete"]:
        raise CacheError(f"{out}: a complete cache already exists; pass --overwrite to replace it")
    differ = [k for k in RESUME_KEYS if attrs[k] != expected[k]]
    if differ:
        detail = "; ".join(f"{k}: file has {attrs[k]}, command asks for {expected[k]}" for k in differ
                           if k != "generator") + ("; generator: another run or weights" if "generator" in differ else "")
        raise CacheError(f"{out}: a partial cache made with other settings ({detail}); rerun its "
                         f"command `{attrs.get('command', '?')}` to resume it, or pass --overwrite to start again")
    return int(attrs["num_done"])


def generate_cache(generator, out: str | os.PathLike, plan: Plan, settings: SamplerSettings, *,
                   batch_size: int = 64, shard: tuple[int, int] | None = None, overwrite: bool = False,
                   progress: bool = True, command: str = "", on_batch=None, feedback=None,
                   precision: str = "fp32", compile: bool = False) -> Path:
    """Sample ``plan``'s images from ``generator`` (a ``cbdm_aug.generator.run_dir.Generator``) into ``out``.

    Creates the file, or resumes a partial one made with the same settings. ``shard=(i, n)``
    writes only the i-th of n contiguous slices (join them with ``merge_shards``). Images are
    sampled on the generator's device. ``on_batch(num_done)`` is called after each batch is on disk.
    ``feedback`` is the criterion of classifier-feedback guidance (``diffusion.sampling.classifier_feedback``),
    described by ``settings.feedback``. ``precision='bf16'`` samples under bf16 autocast and ``compile``
    compiles the UNet (see ``cbdm_aug.diffusion.denoiser``); a bf16 cache records it and resumes only in bf16.
    """
    from cbdm_aug.diffusion.denoiser import Denoiser

    out = Path(out)
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if tuple(plan.class_names) != tuple(generator.class_names):
        raise ValueError(f"the plan's classes {list(plan.class_names)} are not the generator's "
                         f"{generator.class_names}")
    if (feedback is None) != (settings.feedback is None):
        raise ValueError("give classifier feedback and its description (settings.feedback) together")
    if feedback is not None and getattr(generator, "decoder", None) is not None:
        raise ValueError("classifier feedback steers pixels, and a latent generator samples latents; "
                         "drop --feedback-classifier for a generator fitted with --autoencoder")
    labels, seeds = _create_or_resume(generator, out, plan, settings, shard, overwrite, command, precision)
    denoiser = Denoiser(generator.unet, precision, compile) if precision != "fp32" or compile else generator.unet
    with CacheWriter(out) as writer:
        _sample_into(writer, denoiser, generator, labels, seeds, settings, feedback, batch_size,
                     progress=progress, on_batch=on_batch)
        writer.finish()
    return out


def _create_or_resume(generator, out: Path, plan: Plan, settings: SamplerSettings, shard, overwrite: bool,
                      command: str, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """The labels and seeds of the images ``out`` holds (this shard's), after creating ``out`` or checking
    that the partial file there was made with the same generator, settings, plan and shard."""
    labels, seeds = plan_images(plan, settings.seed)
    shard_info = None
    if shard is not None:
        start, stop = shard_range(plan.total, *shard)
        shard_info = {"index": shard[0], "count": shard[1], "start": start, "stop": stop}
        labels, seeds = labels[start:stop], seeds[start:stop]
    # bf16 images differ from fp32 ones by rounding, so a bf16 cache says so and a resume must match;
    # an fp32 cache keeps the header it always had.
    sampler_attrs = settings.record() | ({"precision": precision} if precision != "fp32" else {})
    expected = {"class_names": list(generator.class_names), "generator": generator_identity(generator.meta),
                "sampler": sampler_attrs, "plan": plan.to_dict(), "shard": shard_info}
    expected = json.loads(json.dumps(expected))  # compare as the file stores them
    if out.exists() and overwrite:
        out.unlink()
    if out.exists():
        done = _check_resumable(out, expected)
        log.info("resuming %s at image %d of %d", out, done, len(labels))
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        create_cache(out, labels=labels, seeds=seeds,
                     image_shape=(generator.image_size, generator.image_size, generator.channels),
                     command=command, **expected)
    return labels, seeds


def _sample_into(writer: CacheWriter, denoiser, generator, labels: np.ndarray, seeds: np.ndarray,
                 settings: SamplerSettings, feedback, batch_size: int, *, progress: bool, on_batch) -> None:
    """Sample the images ``writer`` still lacks, ``batch_size`` at a time, each batch written while the next
    is sampled; ``on_batch(num_done)`` after each batch is on disk."""
    import torch

    from cbdm_aug.diffusion.sampling import sample, to_uint8

    bar = None
    if progress:
        from cbdm_aug.progress import counter  # a bar on a terminal, plain lines in a log
        bar = counter(writer.total, f"generate {writer.path.name}", "img", initial=writer.num_done)

    def written(n):  # batch n is on disk
        if bar is not None:
            bar.update(n)
        if on_batch is not None:
            on_batch(writer.num_done)
    try:
        with _BackgroundWrites(writer) as background:
            i = writer.num_done
            while i < writer.total:
                j = min(i + batch_size, writer.total)
                # a latent generator samples its latent grid and decodes it to images (run_dir.Generator.decode)
                x = sample(denoiser, torch.as_tensor(labels[i:j], device=generator.device), seeds[i:j].tolist(),
                           image_size=generator.sample_size, channels=generator.sample_channels,
                           null_class=generator.null_class, sampler=settings.sampler, steps=settings.steps,
                           guidance=settings.guidance, schedule=generator.schedule, feedback=feedback,
                           feedback_scale=settings.feedback["scale"] if settings.feedback else 0.0)
                background.write(to_uint8(generator.decode(x)).numpy(), written)  # while the next batch is sampled
                i = j
            background.wait()
    finally:
        if bar is not None:
            bar.close()


class _BackgroundWrites:
    """One writer thread: ``write`` hands a batch to it and returns at once, after waiting for the
    previous batch, so HDF5 writes and flushes overlap the next batch's sampling while at most
    one batch is in flight and batches land in order. An error in the thread is raised here."""

    def __init__(self, writer: CacheWriter):
        self.writer, self.pending = writer, None

    def __enter__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer")
        return self

    def write(self, images, done) -> None:
        self.wait()
        self.pending = (self.pool.submit(self.writer.write, images), done, len(images))

    def wait(self) -> None:
        if self.pending is not None:
            future, done, n = self.pending
            self.pending = None
            future.result()
            done(n)

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True)  # a batch being written when an error stops the loop is finished
