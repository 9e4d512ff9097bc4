"""The npz format: the one reader (``load_npz``) and the one writer (``write_npz``) of the ``.npz`` files
the package passes between its steps (``RUN/data/train.npz``, the demo's split, the evidence's folds,
the classifier's arrays) and reads from the user.

Arrays: ``x_train``/``y_train`` and ``x_test``/``y_test`` (uint8 images, integer labels) and an optional
``class_names``. ``write_npz`` writes the file whole through ``cbdm_aug.atomic``: a kill leaves the
old file or none, never a torn one under the final name.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from cbdm_aug.atomic import atomic_path
from cbdm_aug.data.sources import DataError, LabeledImages

NPZ_KEYS = {"train": [("x_train", "y_train"), ("images", "labels"), ("x", "y")],
             "test": [("x_test", "y_test")]}


def load_npz(path: str | os.PathLike, split: str = "train") -> LabeledImages:
    """Read images and labels from an ``.npz`` file.

    Accepted keys: ``x_train``/``y_train`` (``x_test``/``y_test`` for ``split='test'``),
    ``images``/``labels`` or ``x``/``y``; optional ``class_names``. Images are uint8
    (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any failure to parse means "not an npz we can read"
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    with npz:
        if split not in NPZ_KEYS:
            raise DataError(f"split must be one of {sorted(NPZ_KEYS)}, got {split!r}")
        keys = next((k for k in NPZ_KEYS[split] if k[0] in npz and k[1] in npz), None)
        if keys is None:
            raise DataError(f"{path}: no image/label arrays for split {split!r}; expected one of "
                            f"{NPZ_KEYS[split]}, found {sorted(npz.files)}")
        try:
            x, y = npz[keys[0]], npz[keys[1]]
            names = [str(n) for n in npz["class_names"]] if "class_names" in npz else None
        except (ValueError, OSError) as e:  # object arrays (pickles are never loaded) or a damaged member
            raise DataError(f"{path}: cannot read its arrays ({e}); expected plain numeric arrays") from None
    if x.dtype != np.uint8:
        raise DataError(f"{path}: {keys[0]} has dtype {x.dtype}; expected uint8 pixels in [0, 255]")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[1] != x.shape[2]:
        raise DataError(f"{path}: {keys[0]} has shape {x.shape}; expected square images "
                        f"(N, H, W), (N, H, W, C) or (N, C, H, W) with C in {{1, 3}}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: {keys[1]} has shape {y.shape}; expected ({len(x)},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {keys[1]} has dtype {y.dtype}; expected integer class ids")
    if len(y) == 0:
        raise DataError(f"{path}: no images")
    if y.min() < 0:
        raise DataError(f"{path}: {keys[1]} has negative label {y.min()}")
    num_classes = int(y.max()) + 1 if names is None else len(names)
    if y.max() >= num_classes:
        raise DataError(f"{path}: label {y.max()} out of range for {num_classes} class_names")
    names = names or [str(i) for i in range(num_classes)]
    return LabeledImages(np.ascontiguousarray(x), y.astype(np.int64), names, f"{path}[{split}]")


def write_npz(path: str | os.PathLike, *, x_train=None, y_train=None, x_test=None, y_test=None,
              class_names=None) -> Path:
    """Write the splits given (images uint8 (N, H, W[, C]) with labels (N,)) and ``class_names`` to
    ``path`` in the layout ``load_npz`` reads, whole or not at all; returns ``path``."""
    path = Path(path)
    arrays = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if (x is None) != (y is None):
            raise ValueError(f"write_npz: give both x_{split} and y_{split}, or neither")
        if x is not None:
            arrays[f"x_{split}"], arrays[f"y_{split}"] = np.asarray(x), np.asarray(y)
    if not arrays:
        raise ValueError("write_npz: no split to write; give x_train/y_train and/or x_test/y_test")
    if class_names is not None:
        arrays["class_names"] = np.array([str(n) for n in class_names])
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def is_whole(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an npz whose every array reads back (its CRCs check): False for a file torn
    by a kill (an older writer's, or a copy's), so a caller that reuses a file writes it again."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            for k in npz.files:
                npz[k]
        return True
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False
