"""Read a synthetic cache: ``SyntheticCache(path)[i] -> (uint8 HWC image, label)``.

Light on purpose: this module imports only h5py and numpy, because a user's classifier training
imports it (through the plugin) and must not pay for torch, diffusers or click.
"""
from __future__ import annotations

import json
import logging
import operator
import os
from pathlib import Path

import h5py
import numpy as np

from cbdm_aug.cache.schema import IMAGES, JSON_ATTRS, LABELS, REQUIRED_ATTRS, SCHEMA, SCHEMA_VERSION, SEEDS, CacheError

log = logging.getLogger(__name__)


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _resume_hint(attrs: dict, path: Path) -> str:
    command = attrs.get("command") or f"cbdm-aug generate RUN_DIR --out {path} (with the same options)"
    return f"resume it by rerunning `{command}`"


def check_header(f: h5py.File, path: Path, *, require_complete: bool = True) -> dict:
    """Validate an open file against schema v1; returns its attributes with JSON ones decoded.

    Raises ``CacheError`` for a foreign file, a newer schema version, missing or inconsistent
    datasets, and (when ``require_complete``) an unfinished file.
    """
    attrs = {k: _attr(v) for k, v in f.attrs.items()}
    if attrs.get("schema") != SCHEMA:
        raise CacheError(f"{path}: not a cbdm-aug synthetic cache (no schema={SCHEMA!r} attribute); "
                         f"write one with `cbdm-aug generate`")
    version = attrs.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise CacheError(f"{path}: invalid schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise CacheError(f"{path}: cache schema version {version} is newer than this cbdm-aug "
                         f"understands ({SCHEMA_VERSION}); upgrade cbdm-aug")
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    missing += [k for k in (IMAGES, LABELS, SEEDS) if not isinstance(f.get(k), h5py.Dataset)]
    if missing:
        raise CacheError(f"{path}: damaged cache, missing {', '.join(missing)}")
    for k in JSON_ATTRS:
        try:
            attrs[k] = json.loads(attrs[k])
        except (TypeError, json.JSONDecodeError):
            raise CacheError(f"{path}: damaged cache, attribute {k!r} is not JSON") from None
    images, labels, seeds = f[IMAGES], f[LABELS], f[SEEDS]
    n = images.shape[0] if images.ndim == 4 else -1
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (n,) or seeds.shape != (n,):
        raise CacheError(f"{path}: damaged cache, inconsistent datasets: images {images.dtype} "
                         f"{images.shape}, labels {labels.shape}, seeds {seeds.shape}")
    if require_complete and not (attrs["complete"] and attrs["num_done"] == n):
        raise CacheError(f"{path}: unfinished cache, {attrs['num_done']} of {n} images written; "
                         + _resume_hint(attrs, path))
    return attrs


def open_cache(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """``h5py.File(path, mode)``, with a missing, truncated or non-HDF5 file as a ``CacheError``."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such cache file")
    try:
        return h5py.File(path, mode)
    except OSError as e:
        from cbdm_aug.locking import describe, live_holder, lock_path

        holder = live_holder(lock_path(path, folder=False))
        if holder:  # never the advice to overwrite: that would destroy a live job's file
            raise CacheError(f"{path}: in use, {describe(holder)} is writing it; wait for it to finish") from None
        if "unable to lock file" in str(e):
            raise CacheError(f"{path}: in use, another process has it open for writing (HDF5 file lock); "
                             "wait for it to finish") from None
        raise CacheError(f"{path}: not a readable HDF5 file: truncated, corrupt, foreign or in use "
                         f"({e}); if a `cbdm-aug generate` wrote it and was killed, rerun that "
                         f"command with --overwrite to start the file again") from None


def read_header(path: str | os.PathLike, *, require_complete: bool = True) -> dict:
    """The validated attributes of the cache at ``path`` (see ``check_header``)."""
    with open_cache(path) as f:
        return check_header(f, Path(path), require_complete=require_complete)


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a finished cache that readers accept (False if missing, partial or bad)."""
    if not Path(path).exists():
        return False
    try:
        read_header(path)
        return True
    except ValueError:  # CacheError: unfinished, truncated, foreign or future
        return False


class SyntheticCache:
    """A complete synthetic cache as a map-style dataset of (uint8 (H, W, C) array, int label).

    Opening validates the schema and reads the labels (not the images). The image data is opened
    lazily in each process, so the object can go to DataLoader workers: pickling drops the handle
    and each worker opens its own. Contiguous, uncompressed images (what ``generate`` writes) are
    memory-mapped; any other layout is read through h5py.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open_cache(self.path) as f:
            self.attrs = check_header(f, self.path)
            self.labels = np.asarray(f[LABELS][()], dtype=np.int64)
            images = f[IMAGES]
            self.image_shape = tuple(int(s) for s in images.shape[1:])
            contiguous = images.chunks is None and not images.compression
            self._offset = images.id.get_offset() if contiguous else None
        self.class_names = list(self.attrs["class_names"])
        if self.attrs["shard"] is not None:
            s = self.attrs["shard"]
            log.warning("%s is shard %d/%d of a cache; join the shards with `cbdm-aug merge-shards`",
                        self.path, s["index"], s["count"])
        self._images = None
        self._file = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i) -> tuple[np.ndarray, int]:
        i = operator.index(i)
        n = len(self.labels)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a cache of {n} images")
        i %= n
        return np.array(self._data()[i]), int(self.labels[i])

    def batch(self, index) -> np.ndarray:
        """The images at ``index`` (a slice or increasing indices), uint8 (len, H, W, C), in one read."""
        if not isinstance(index, slice):
            index = np.asarray(index, dtype=np.int64)
            if len(index) > 1 and (np.diff(index) <= 0).any():
                raise ValueError("batch() takes increasing indices")
        return np.array(self._data()[index])

    def _data(self):
        # Reopen after a fork: an HDF5 handle must not be shared between processes.
        if self._pid != os.getpid():
            self._images = self._file = None
            if self._offset is not None:
                self._images = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._offset,
                                         shape=(len(self.labels), *self.image_shape))
            else:
                self._file = open_cache(self.path)
                self._images = self._file[IMAGES]
            self._pid = os.getpid()
        return self._images

    @property
    def seeds(self) -> np.ndarray:
        """int64 (N,): the seed each image was sampled from."""
        with open_cache(self.path) as f:
            return np.asarray(f[SEEDS][()], dtype=np.int64)

    def counts(self) -> np.ndarray:
        """int64 (num_classes,): images per class."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._images = self._file = self._pid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_images=None, _file=None, _pid=None)
        return state

    def __repr__(self) -> str:
        return (f"SyntheticCache({str(self.path)!r}, {len(self)} images of {self.image_shape}, "
                f"{len(self.class_names)} classes)")
