"""What every format shares: one image's bytes and their check against the cache, and the worker pool
that encodes them (PNG encoding is the export's cost).

Light: h5py, numpy and PIL; the worker processes import nothing else.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from cbdm_aug.cache.export.policy import KEPT_EXTENSIONS, Item
from cbdm_aug.cache.reader import SyntheticCache

CHUNK = 256            # images per worker task: large enough to hide the inter-process cost
PARALLEL_MIN = 2000    # below this many images, worker processes cost more than they save


def synthetic_images(cache_path, items) -> dict[int, np.ndarray]:
    """The cache's images that ``items`` name, by cache index, read in one batch."""
    index = sorted(it.ref for it in items if it.kind == "synthetic")
    if not index:
        return {}
    with SyntheticCache(cache_path) as syn:
        return dict(zip(index, syn.batch(index)))


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(data: bytes, convert: bool = False) -> np.ndarray:
    """uint8 (H, W, C) pixels of an encoded image; ``convert`` brings other modes to grey or RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        x = np.asarray(im.convert("L" if im.mode in ("1", "L") else "RGB") if convert else im)
    return x[..., None] if x.ndim == 2 else x


def is_kept_file(it: Item) -> bool:
    """Whether the export keeps this real image's file byte for byte (PNG, JPEG)."""
    return isinstance(it.ref, Path) and it.ref.suffix.lower() in KEPT_EXTENSIONS


def _image_of(it: Item, images: dict) -> np.ndarray:
    if it.kind == "synthetic":
        return images[it.ref]
    if isinstance(it.ref, Path):  # a real file in another format (BMP, WebP), re-encoded as PNG
        return _pixels(it.ref.read_bytes(), convert=True)
    return it.ref


def encoded(it: Item, images: dict) -> bytes:
    """The bytes the export writes for ``it`` (``images``: from ``synthetic_images``)."""
    return it.ref.read_bytes() if is_kept_file(it) else _png(_image_of(it, images))


def matches(data: bytes, it: Item, images: dict) -> bool:
    """Whether ``data`` is what the export writes for ``it``: the same bytes for a kept real file, the
    same pixels otherwise (a torn or foreign file does not match)."""
    if is_kept_file(it):
        return data == it.ref.read_bytes()
    try:
        return np.array_equal(_pixels(data), _image_of(it, images))
    except Exception:  # noqa: BLE001 - anything that does not decode is not a finished image
        return False


def chunks(items: list, size: int = CHUNK) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _quiet_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which cancels the rest


def run_tasks(fn, tasks: list[tuple], workers: int):
    """``fn(*task)`` for each task, in order: here, or in ``workers`` spawned processes (spawn: a clean
    child, whatever threads this process has started). Leaving early cancels what has not started."""
    if workers <= 1 or len(tasks) < 2:
        for t in tasks:
            yield fn(*t)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ex = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet_worker)
    try:
        yield from ex.map(fn, *zip(*tasks))
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def default_workers(n_images: int) -> int:
    return min(os.cpu_count() or 1, 8) if n_images >= PARALLEL_MIN else 1
