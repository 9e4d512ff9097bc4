"""Filter a synthetic cache: drop images that a classifier trained on the real data does not assign
to their class with enough confidence, images far from their class's real images in that
classifier's feature space (DiffuLT, Shao et al. 2024, keeps only "approximately in-distribution"
samples), and near-copies of training images; then, with ``max_copy_share``, every image of a class
whose generated images are mostly near-copies (``evaluate.gate``).

The feature-distance criterion: for class c, mu_c is the mean feature of its real training images
and r_c the ``feature_quantile`` quantile of their distances to mu_c; a generated image of class c
is kept when its distance to mu_c is at most r_c. With q = 0.95 an image is kept when it is no
farther out than 95% of the real images of its class.

The filtered cache is a normal schema-v1 cache with the kept images (in their original order, with
their seeds), and a ``filter`` attribute (JSON) that records the criteria, the classifier, and
the counts kept and removed per class for each reason.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from cbdm_aug.atomic import atomic_path
from cbdm_aug.evaluate import metrics as M
from cbdm_aug.evaluate.features import FeatureSpace
from cbdm_aug.evaluate.errors import EvaluateError

log = logging.getLogger(__name__)

DEFAULT_CONFIDENCE = 0.5


def filter_cache(cache: str | os.PathLike, out: str | os.PathLike, space: FeatureSpace, train_images: np.ndarray,
                 train_labels: np.ndarray, *, confidence: float = DEFAULT_CONFIDENCE,
                 near_copy_ratio: float = M.NEAR_COPY_RATIO, feature_quantile: float | None = None,
                 max_copy_share: float | None = None, overwrite: bool = False,
                 batch_size: int = 512, progress: bool = True, command: str = "") -> dict:
    """Write the images of ``cache`` that pass both criteria to ``out``; returns the ``filter`` record.

    An image of class c is kept when the classifier's softmax probability of c is >= ``confidence``
    and it is not a near-copy of a training image of class c (``metrics.memorisation`` with
    ``near_copy_ratio``). With ``feature_quantile`` q it must also lie within its class's
    q-quantile feature distance (module docstring). With ``max_copy_share`` s, a class whose
    unfiltered images are near-copies at a share of s or more keeps none (``gate.gate_classes``).
    ``train_images`` are the real training images, uint8 (N, H, W, C).
    """
    from tqdm.auto import tqdm

    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.progress import on_terminal
    from cbdm_aug.cache.writer import CacheWriter, create_cache
    from cbdm_aug.data.convert import convert_images
    from cbdm_aug.evaluate.gate import gate_classes

    cache, out = Path(cache), Path(out)
    if not 0 <= confidence <= 1:
        raise EvaluateError(f"--confidence must be in [0, 1], got {confidence}")
    if not 0 <= near_copy_ratio <= 1:
        raise EvaluateError(f"--near-copy-ratio must be in [0, 1], got {near_copy_ratio}")
    if feature_quantile is not None and not 0 < feature_quantile <= 1:
        raise EvaluateError(f"--feature-quantile must be in (0, 1], got {feature_quantile}")
    if max_copy_share is not None and not 0 < max_copy_share <= 1:
        raise EvaluateError(f"--max-copy-share must be in (0, 1], got {max_copy_share}")
    if out.exists() and not overwrite:
        raise EvaluateError(f"{out}: already exists; pass --overwrite to replace it")
    if out.resolve() == cache.resolve():
        raise EvaluateError(f"{out}: the output must differ from the input cache")
    with SyntheticCache(cache) as syn:
        names = list(syn.class_names)
        if space.class_names is not None and space.class_names != names:
            raise EvaluateError(f"the classifier's classes {space.class_names} differ from the cache's {names}")
        C, (size, _, channels) = len(names), syn.image_shape
        # The training images stay uint8 and grouped by class; a class's float vectors (4 bytes a
        # pixel) are made when a batch needs them, a few classes at a time (the cache is in class
        # order), so a large training set is not held again as floats.
        train = convert_images(train_images, size, channels)
        order, bounds = M.class_slices(train_labels, C)

        @functools.lru_cache(maxsize=8)
        def class_pixels(c: int) -> torch.Tensor:
            return M.pixel_vectors(train[order[bounds[c]:bounds[c + 1]]])

        # Each training image's distance to its nearest same-class neighbour, the near-copy scale.
        sibling = [M.kth_neighbour_distance(class_pixels(c), 1, 1024) if bounds[c + 1] - bounds[c] > 1 else None
                   for c in range(C)]
        labels, seeds = syn.labels, syn.seeds
        confident = np.zeros(len(syn), bool)
        copy = np.zeros(len(syn), bool)
        spacing = np.full(len(syn), np.nan)  # distance to the nearest training image / that image's spacing
        near = np.ones(len(syn), bool)
        if feature_quantile is not None:
            centre, radius = class_feature_radii(space, train_images, train_labels, C, feature_quantile)
        for i in tqdm(range(0, len(syn), batch_size), desc=f"filter {cache.name}",
                      disable=not (progress and on_terminal())):  # a log gets the removed table, not redraws
            j = min(i + batch_size, len(syn))
            x = syn.batch(slice(i, j))
            y = labels[i:j]
            p = space.predict_proba(x)
            confident[i:j] = (p[torch.arange(j - i), torch.as_tensor(y)] >= confidence).numpy()
            if feature_quantile is not None:
                d = (space.extract(x) - centre[torch.as_tensor(y)]).norm(dim=1)
                near[i:j] = (d <= radius[torch.as_tensor(y)]).numpy()
            pix = M.pixel_vectors(x)
            for c in np.unique(y):
                m = y == c
                if bounds[c + 1] > bounds[c]:
                    d, nearest = M.nearest_distance(pix[m], class_pixels(int(c)))
                    if sibling[c] is not None:
                        scale = sibling[c][nearest]
                        limit = near_copy_ratio * scale
                    else:  # one training image: an absolute limit, and the spacing it stands for
                        scale = torch.full_like(d, M.NEAR_COPY_FALLBACK / M.NEAR_COPY_RATIO)
                        limit = M.NEAR_COPY_FALLBACK
                    copy[i:j][m] = (d < limit).numpy()
                    spacing[i:j][m] = (d / scale.clamp_min(1e-12)).numpy()
        real_counts = np.bincount(train_labels, minlength=C)
        generated = np.bincount(labels, minlength=C)
        by_label, cuts = M.class_slices(labels, C)
        median = [float(np.median(spacing[by_label[cuts[c]:cuts[c + 1]]])) if cuts[c + 1] > cuts[c] else float("nan")
                  for c in range(C)]
        gate = gate_classes(names, real_counts, generated, np.bincount(labels[copy], minlength=C), median,
                            max_copy_share)
        gated = np.array([gate[n]["used"] for n in names], bool)[labels] if len(labels) else np.ones(0, bool)
        keep = confident & ~copy & near & gated
        count = lambda m: np.bincount(labels[m], minlength=C).tolist()  # noqa: E731
        record = {
            "criteria": {"classifier_confidence_min": confidence,
                         "near_copy": (f"RMS pixel distance to the nearest same-class training image < {near_copy_ratio} x "
                                       f"that image's distance to its own nearest same-class neighbour "
                                       f"(< {M.NEAR_COPY_FALLBACK} for a class with one training image)"),
                         "near_copy_ratio": near_copy_ratio,
                         "feature_quantile": feature_quantile,
                         "max_copy_share": max_copy_share,
                         "feature_distance": (None if feature_quantile is None else
                                              f"distance to the class's mean real feature <= the {feature_quantile} "
                                              "quantile of the class's real images' distances")},
            "classifier": space.description, "source": str(cache),
            "before": dict(zip(names, count(np.ones(len(labels), bool)))),
            "kept": dict(zip(names, count(keep))),
            "removed_low_confidence": dict(zip(names, count(~confident))),
            "removed_near_copy": dict(zip(names, count(copy))),
            "removed_far_from_class": dict(zip(names, count(~near))),
            "removed_both": dict(zip(names, count(~confident & copy))),
            "removed_gated": dict(zip(names, count(~gated & confident & ~copy & near))),
            "gate": gate,
            "command": command,
        }
        attrs = syn.attrs
        plan = dict(attrs["plan"])
        plan.update(counts=record["kept"], total=int(keep.sum()))
        with atomic_path(out) as tmp:
            create_cache(tmp, labels=labels[keep], seeds=seeds[keep], image_shape=syn.image_shape,
                         class_names=names, generator=attrs["generator"], sampler=attrs["sampler"], plan=plan,
                         shard=attrs["shard"], command=command)
            with CacheWriter(tmp) as w:
                kept = np.flatnonzero(keep)
                for i in range(0, len(kept), batch_size):
                    w.write(syn.batch(kept[i:i + batch_size]))
                w.finish()
            import h5py

            with h5py.File(tmp, "r+") as f:
                f.attrs["filter"] = json.dumps(record)
    return record


def class_feature_radii(space: FeatureSpace, images: np.ndarray, labels: np.ndarray, num_classes: int,
                        quantile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu float (C, D), r float (C,)): each class's mean real feature and the ``quantile`` quantile of its
    real images' distances to it. A class without real images gets r = inf (nothing to compare with)."""
    feats = space.extract(images)
    labels = torch.as_tensor(labels)
    centre = torch.zeros(num_classes, feats.shape[1])
    radius = torch.full((num_classes,), float("inf"))
    for c in range(num_classes):
        f = feats[labels == c]
        if len(f):
            centre[c] = f.mean(0)
            radius[c] = torch.quantile((f - centre[c]).norm(dim=1), quantile)
    return centre, radius


def removed_table(record: dict) -> str:
    """A plain-text table of counts before, removed per reason and kept, one row per class."""
    from cbdm_aug.data import count_table

    names = list(record["before"])
    col = lambda key: [record[key][n] for n in names]  # noqa: E731
    gated = [("gated off", col("removed_gated"))] if record.get("removed_gated") else []
    return count_table(names, ("before", col("before")), ("low confidence", col("removed_low_confidence")),
                       ("near-copy", col("removed_near_copy")), *gated, ("kept", col("kept")))
