"""Write a synthetic cache: create the preallocated file, append images in order, mark it complete.

Like the reader, this imports only h5py and numpy, so tests and other tools can build caches
from arrays (``write_cache``) without a generator.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from cbdm_aug.atomic import atomic_path
from cbdm_aug.cache.reader import check_header, open_cache, read_header
from cbdm_aug.cache.schema import IMAGES, LABELS, SCHEMA, SCHEMA_VERSION, SEEDS, CacheError
from cbdm_aug.errors import NoSpace


def _package_version() -> str:
    from cbdm_aug import __version__

    return __version__


class CacheNoSpace(NoSpace, CacheError):
    """A cache that could never be finished where it is."""


def _check_space(path: Path, data_bytes: int) -> None:
    """Refuse a cache that could never be finished where it is: the whole file is laid out at
    creation, so its size is known before the first image (free disk space, and ``ulimit -f``)."""
    import resource
    import shutil

    need = data_bytes + (1 << 20)  # + the header, attributes and HDF5 metadata
    room = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        room = min(room, limit)
    if need > room:
        raise CacheNoSpace(path, f"needs {need / 1e6:.1f} MB but only {room / 1e6:.1f} MB can be written there",
                           "free space (or raise ulimit -f) and rerun")


def create_cache(path: str | os.PathLike, *, labels, seeds, image_shape: tuple[int, int, int],
                 class_names: list[str], generator: dict, sampler: dict, plan: dict,
                 shard: dict | None = None, command: str = "") -> Path:
    """Create an empty (``complete=False``, ``num_done=0``) cache for ``len(labels)`` images.

    ``labels`` and ``seeds`` (ints, one per image) are written now; images are written later by
    ``CacheWriter``. The file is built under a temporary name and renamed, so ``path`` is either
    absent or a valid file. Its whole layout is allocated here (see ``schema``).
    """
    path = Path(path)
    labels = np.asarray(labels, dtype=np.int64)
    seeds = np.asarray(seeds, dtype=np.int64)
    if labels.ndim != 1 or labels.shape != seeds.shape:
        raise ValueError(f"need one seed per label, got labels {labels.shape} and seeds {seeds.shape}")
    if len(labels) and not (0 <= labels.min() and labels.max() < len(class_names)):
        raise ValueError(f"labels must lie in [0, {len(class_names)}), got [{labels.min()}, {labels.max()}]")
    _check_space(path, len(labels) * (int(np.prod(image_shape)) + 16))
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # every byte is written by generation
            f.create_dataset(IMAGES, shape=(len(labels), *image_shape), dtype=np.uint8, dcpl=dcpl)
            f.create_dataset(LABELS, data=labels)
            f.create_dataset(SEEDS, data=seeds)
            f.attrs.update({
                "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
                "class_names": json.dumps(list(class_names)), "complete": False, "num_done": 0,
                "generator": json.dumps(generator, sort_keys=True),
                "sampler": json.dumps(sampler, sort_keys=True),
                "plan": json.dumps(plan, sort_keys=True), "shard": json.dumps(shard, sort_keys=True),
                "package_version": _package_version(), "command": command,
            })
    return path


def _open_unbuffered(path: Path) -> h5py.File:
    """``path`` read-write without HDF5's sieve buffer. With it, a write that fails (a full disk)
    stayed buffered, and closing the file retried it and printed a traceback; without it, the
    write raises at once and nothing is left to retry. Images go in whole batches anyway."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_sieve_buf_size(0)
    return h5py.File(h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR, fapl=fapl))


class CacheWriter:
    """Append images, in index order, to a cache made by ``create_cache``.

    After each ``write`` the images are flushed before the ``num_done`` counter moves past them,
    so a killed writer leaves a file whose first ``num_done`` images are final.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        open_cache(self.path).close()  # a missing, truncated or foreign file is a CacheError
        self._f = _open_unbuffered(self.path)
        try:
            self.attrs = check_header(self._f, self.path, require_complete=False)
        except CacheError:
            self._f.close()
            raise
        self.total = int(self._f[IMAGES].shape[0])

    @property
    def num_done(self) -> int:
        return int(self._f.attrs["num_done"])

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self._f[LABELS][()], dtype=np.int64)

    @property
    def seeds(self) -> np.ndarray:
        return np.asarray(self._f[SEEDS][()], dtype=np.int64)

    def write(self, images: np.ndarray) -> None:
        """Write uint8 (n, H, W, C) ``images`` at indices [num_done, num_done + n)."""
        start = self.num_done
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self._f[IMAGES].shape[1:]:
            raise ValueError(f"expected uint8 images of shape (n, {self._f[IMAGES].shape[1:]}), "
                             f"got {images.dtype} {images.shape}")
        if start + len(images) > self.total:
            raise ValueError(f"{len(images)} images at {start} overflow a cache of {self.total}")
        self._f[IMAGES][start:start + len(images)] = images
        self._f.flush()
        self._f.attrs["num_done"] = start + len(images)
        self._f.flush()

    def finish(self) -> None:
        """Mark the file complete; every image must have been written."""
        if self.num_done != self.total:
            raise CacheError(f"{self.path}: only {self.num_done} of {self.total} images written")
        self._f.attrs["complete"] = True
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_cache(path: str | os.PathLike, images: np.ndarray, labels, *, class_names: list[str],
                seeds=None, generator: dict | None = None, sampler: dict | None = None,
                plan: dict | None = None) -> Path:
    """Write a complete cache from uint8 (N, H, W, C) ``images`` in one go (fixtures, tools)."""
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    seeds = np.arange(len(labels)) if seeds is None else seeds
    counts = np.bincount(labels, minlength=len(class_names))
    plan = plan or {"policy": "explicit", "counts": dict(zip(class_names, map(int, counts))),
                    "real_counts": None, "total": int(len(labels))}
    create_cache(path, labels=labels, seeds=seeds, image_shape=images.shape[1:],
                 class_names=class_names, generator=generator or {}, sampler=sampler or {}, plan=plan)
    with CacheWriter(path) as w:
        if len(images):
            w.write(images)
        w.finish()
    return Path(path)


def merge_shards(out: str | os.PathLike, shards, *, overwrite: bool = False, block: int = 4096) -> Path:
    """Join the complete shards of one sharded ``generate`` into one cache at ``out``.

    The shards may be given in any order; together they must cover the plan exactly once. The
    result holds the same images, labels and seeds, in the same order, as an unsharded run.
    """
    out = Path(out)
    shards = [Path(p) for p in shards]
    if not shards:
        raise CacheError("no shard files given")
    headers = []
    for p in shards:
        h = read_header(p)
        if h["shard"] is None:
            raise CacheError(f"{p}: not a shard (it was generated without --shard)")
        headers.append((h["shard"]["index"], p, h))
    headers.sort(key=lambda t: t[0])
    first = headers[0][2]
    for _, p, h in headers[1:]:
        differ = [k for k in ("class_names", "generator", "sampler", "plan") if h[k] != first[k]]
        if h["shard"]["count"] != first["shard"]["count"]:
            differ.append("shard count")
        if differ:
            raise CacheError(f"{p}: not a shard of the same run as {headers[0][1]} "
                             f"(differs in {', '.join(differ)})")
    n = first["shard"]["count"]
    indices = [i for i, _, _ in headers]
    if indices != list(range(n)):
        missing = sorted(set(range(n)) - set(indices))
        dupes = sorted({i for i in indices if indices.count(i) > 1})
        raise CacheError(f"need each of the {n} shards exactly once; missing {missing}, repeated {dupes}")
    if out.exists() and not overwrite:
        raise CacheError(f"{out}: already exists; pass --overwrite to replace it")
    if out.resolve() in {p.resolve() for p in shards}:
        raise CacheError(f"{out}: the output must not be one of the shards")
    labels, seeds = [], []
    for _, p, _ in headers:
        with open_cache(p) as f:
            labels.append(f[LABELS][()])
            seeds.append(f[SEEDS][()])
            image_shape = f[IMAGES].shape[1:]
    command = "cbdm-aug merge-shards " + " ".join(map(str, [out, *(p for _, p, _ in headers)]))
    with atomic_path(out) as tmp:  # the merged file appears whole, under its name, or not at all
        create_cache(tmp, labels=np.concatenate(labels), seeds=np.concatenate(seeds), image_shape=image_shape,
                     class_names=first["class_names"], generator=first["generator"],
                     sampler=first["sampler"], plan=first["plan"], shard=None, command=command)
        with CacheWriter(tmp) as w:
            for _, p, _ in headers:
                with open_cache(p) as f:
                    for i in range(0, f[IMAGES].shape[0], block):
                        w.write(f[IMAGES][i:i + block])
            w.finish()
    return out
