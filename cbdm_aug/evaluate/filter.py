"""Filter a synthetic cache: drop images that a classifier trained on the real data does not assign
to their class with enough confidence, and near-copies of training images (as DiffuLT and other
recognition work do before training on generated data).

The filtered cache is a normal schema-v1 cache with the kept images (in their original order, with
their seeds), and a ``filter`` attribute (JSON) that records the criteria, the classifier, and
the counts kept and removed per class for each reason.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from cbdm_aug.evaluate import metrics as M
from cbdm_aug.evaluate.features import FeatureSpace
from cbdm_aug.evaluate.run import EvaluateError

log = logging.getLogger(__name__)

DEFAULT_CONFIDENCE = 0.5


def filter_cache(cache: str | os.PathLike, out: str | os.PathLike, space: FeatureSpace, train_images: np.ndarray,
                 train_labels: np.ndarray, *, confidence: float = DEFAULT_CONFIDENCE,
                 near_copy_ratio: float = M.NEAR_COPY_RATIO, overwrite: bool = False,
                 batch_size: int = 512, progress: bool = True, command: str = "") -> dict:
    """Write the images of ``cache`` that pass both criteria to ``out``; returns the ``filter`` record.

    An image of class c is kept when the classifier's softmax probability of c is >= ``confidence``
    and it is not a near-copy of a training image of class c (``metrics.memorisation`` with
    ``near_copy_ratio``). ``train_images`` are the real training images, uint8 (N, H, W, C).
    """
    from tqdm.auto import tqdm

    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.cache.writer import CacheWriter, create_cache
    from cbdm_aug.data.convert import convert_images

    cache, out = Path(cache), Path(out)
    if not 0 <= confidence <= 1:
        raise EvaluateError(f"--confidence must be in [0, 1], got {confidence}")
    if not 0 <= near_copy_ratio <= 1:
        raise EvaluateError(f"--near-copy-ratio must be in [0, 1], got {near_copy_ratio}")
    if out.exists() and not overwrite:
        raise EvaluateError(f"{out}: already exists; pass --overwrite to replace it")
    if out.resolve() == cache.resolve():
        raise EvaluateError(f"{out}: the output must differ from the input cache")
    with SyntheticCache(cache) as syn:
        names = list(syn.class_names)
        if space.class_names is not None and space.class_names != names:
            raise EvaluateError(f"the classifier's classes {space.class_names} differ from the cache's {names}")
        C, (size, _, channels) = len(names), syn.image_shape
        train = M.pixel_vectors(convert_images(train_images, size, channels))
        by_class = [train[train_labels == c] for c in range(C)]
        # Each training image's distance to its nearest same-class neighbour, the near-copy scale.
        sibling = [M.kth_neighbour_distance(t, 1, 1024) if len(t) > 1 else None for t in by_class]
        labels, seeds = syn.labels, syn.seeds
        confident = np.zeros(len(syn), bool)
        copy = np.zeros(len(syn), bool)
        for i in tqdm(range(0, len(syn), batch_size), desc=f"filter {cache.name}", disable=not progress):
            j = min(i + batch_size, len(syn))
            x = np.stack([syn[k][0] for k in range(i, j)])
            y = labels[i:j]
            p = space.predict_proba(x)
            confident[i:j] = (p[torch.arange(j - i), torch.as_tensor(y)] >= confidence).numpy()
            pix = M.pixel_vectors(x)
            for c in np.unique(y):
                m = y == c
                if len(by_class[c]):
                    d, nearest = M.nearest_distance(pix[m], by_class[c])
                    limit = near_copy_ratio * sibling[c][nearest] if sibling[c] is not None else M.NEAR_COPY_FALLBACK
                    copy[i:j][m] = (d < limit).numpy()
        keep = confident & ~copy
        count = lambda m: np.bincount(labels[m], minlength=C).tolist()  # noqa: E731
        record = {
            "criteria": {"classifier_confidence_min": confidence,
                         "near_copy": (f"RMS pixel distance to the nearest same-class training image < {near_copy_ratio} x "
                                       f"that image's distance to its own nearest same-class neighbour "
                                       f"(< {M.NEAR_COPY_FALLBACK} for a class with one training image)"),
                         "near_copy_ratio": near_copy_ratio},
            "classifier": space.description, "source": str(cache),
            "before": dict(zip(names, count(np.ones(len(labels), bool)))),
            "kept": dict(zip(names, count(keep))),
            "removed_low_confidence": dict(zip(names, count(~confident))),
            "removed_near_copy": dict(zip(names, count(copy))),
            "removed_both": dict(zip(names, count(~confident & copy))),
            "command": command,
        }
        attrs = syn.attrs
        plan = dict(attrs["plan"])
        plan.update(counts=record["kept"], total=int(keep.sum()))
        tmp = out.with_name(f".{out.name}.filtering{os.getpid()}")
        try:
            create_cache(tmp, labels=labels[keep], seeds=seeds[keep], image_shape=syn.image_shape,
                         class_names=names, generator=attrs["generator"], sampler=attrs["sampler"], plan=plan,
                         shard=attrs["shard"], command=command)
            with CacheWriter(tmp) as w:
                kept = np.flatnonzero(keep)
                for i in range(0, len(kept), batch_size):
                    w.write(np.stack([syn[int(k)][0] for k in kept[i:i + batch_size]]))
                w.finish()
            import h5py

            with h5py.File(tmp, "r+") as f:
                f.attrs["filter"] = json.dumps(record)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return record


def removed_table(record: dict) -> str:
    """A plain-text table of counts before, removed per reason and kept, one row per class."""
    from cbdm_aug.data import count_table

    names = list(record["before"])
    col = lambda key: [record[key][n] for n in names]  # noqa: E731
    return count_table(names, ("before", col("before")), ("low confidence", col("removed_low_confidence")),
                       ("near-copy", col("removed_near_copy")), ("kept", col("kept")))
