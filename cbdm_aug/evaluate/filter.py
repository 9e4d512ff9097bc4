"""Filter a synthetic cache: drop images that a classifier trained on the real data does not recognise
as their class (``criteria.recognised``: scored as their class above all but 1% of the other classes' real
images, ``criteria.class_thresholds``), and near-copies of training images; then, with
``max_copy_share``, every image of a class whose generated images are mostly near-copies
(``evaluate.gate``).

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
from cbdm_aug.evaluate.criteria import (
    CONFIDENCE,
    FALSE_POSITIVE_SHARE,
    MOSTLY_FILTERED,
    TOP_SHARE,
    check_criteria,
    class_thresholds,
    recognised,
    top_k,
)
from cbdm_aug.evaluate.errors import EvaluateError
from cbdm_aug.evaluate.features import FeatureSpace

log = logging.getLogger(__name__)



def filter_cache(cache: str | os.PathLike, out: str | os.PathLike, space: FeatureSpace, train_images: np.ndarray,
                 train_labels: np.ndarray, *, confidence: float | None = CONFIDENCE,
                 top_share: float | None = TOP_SHARE, false_positive_share: float | None = FALSE_POSITIVE_SHARE,
                 near_copy_ratio: float = M.NEAR_COPY_RATIO, max_copy_share: float | None = None,
                 overwrite: bool = False, batch_size: int = 512, progress: bool = True, command: str = "") -> dict:
    """Write the images of ``cache`` that pass both criteria to ``out``; returns the ``filter`` record.

    An image of class c is kept when the classifier recognises it as c (``criteria.recognised`` with
    ``false_positive_share``, ``top_share`` and ``confidence``) and it is not a near-copy of a training image of class c
    (``metrics.memorisation`` with ``near_copy_ratio``). With ``max_copy_share`` s, a class whose unfiltered images are near-copies
    at a share of s or more keeps none (``gate.gate_classes``).
    ``train_images`` are the real training images, uint8 (N, H, W, C).
    """
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.evaluate.gate import gate_classes

    cache, out = Path(cache), Path(out)
    _check_options(cache, out, confidence, top_share, near_copy_ratio, max_copy_share, overwrite, false_positive_share)
    with SyntheticCache(cache) as syn:
        names = list(syn.class_names)
        if space.class_names is not None and space.class_names != names:
            raise EvaluateError(f"the classifier's classes {space.class_names} differ from the cache's {names}")
        C, (size, _, channels) = len(names), syn.image_shape
        training = _TrainingClasses(train_images, train_labels, C, size, channels)
        rule = _rule(space, training, train_labels, top_share, confidence, false_positive_share, batch_size)
        confident, copy, spacing = _score(syn, space, training, rule, near_copy_ratio,
                                          batch_size, progress, desc=f"filter {cache.name}")
        labels = syn.labels
        gate = gate_classes(names, np.bincount(train_labels, minlength=C), np.bincount(labels, minlength=C),
                            np.bincount(labels[copy], minlength=C), _class_medians(spacing, labels, C),
                            max_copy_share)
        gated = np.array([gate[n]["used"] for n in names], bool)[labels] if len(labels) else np.ones(0, bool)
        keep = confident & ~copy & gated
        count = lambda m: dict(zip(names, np.bincount(labels[m], minlength=C).tolist()))  # noqa: E731
        record = {
            "criteria": _criteria(confidence, top_share, C, near_copy_ratio, max_copy_share, false_positive_share,
                                  None if rule[2] is None else dict(zip(names, map(float, rule[2])))),
            "classifier": space.description, "source": str(cache),
            "before": count(np.ones(len(labels), bool)),
            "kept": count(keep),
            "removed_low_confidence": count(~confident),
            "removed_near_copy": count(copy),
            "removed_both": count(~confident & copy),
            "removed_gated": count(~gated & confident & ~copy),
            "gate": gate,
            "command": command,
        }
        _write_kept(syn, out, keep, record, batch_size, command)
    return record


def pass_counts(cache: str | os.PathLike, space: FeatureSpace, train_images: np.ndarray, train_labels: np.ndarray,
                *, confidence: float | None = CONFIDENCE, top_share: float | None = TOP_SHARE,
                false_positive_share: float | None = FALSE_POSITIVE_SHARE,
                near_copy_ratio: float = M.NEAR_COPY_RATIO, batch_size: int = 512) -> dict[str, tuple[int, int]]:
    """``{class name: (images, images that pass)}`` of ``cache`` under the filter's per-image criteria
    (recognised, not a near-copy; the per-class gate is not applied). Writes nothing: the cache stage
    measures a first batch of each class with it."""
    from cbdm_aug.cache.reader import SyntheticCache

    check_criteria(confidence, near_copy_ratio, None, top_share, false_positive_share)
    with SyntheticCache(cache) as syn:
        names = list(syn.class_names)
        C, (size, _, channels) = len(names), syn.image_shape
        training = _TrainingClasses(train_images, train_labels, C, size, channels)
        rule = _rule(space, training, train_labels, top_share, confidence, false_positive_share, batch_size)
        ok, copy, _ = _score(syn, space, training, rule, near_copy_ratio, batch_size, False, desc="first batch")
        labels = syn.labels
    n, passed = np.bincount(labels, minlength=C), np.bincount(labels[ok & ~copy], minlength=C)
    return {name: (int(a), int(b)) for name, a, b in zip(names, n, passed)}


def kept_line(record: dict, classifier: str = "") -> str | None:
    """One line when the filter kept less than ``MOSTLY_FILTERED`` of the images, saying how many, in how
    many classes, and why (the reason that removed most; ``classifier`` says how good its classifier is);
    None otherwise."""
    before, kept = sum(record["before"].values()), sum(record["kept"].values())
    if not before or kept >= MOSTLY_FILTERED * before:
        return None
    wanted = [n for n, v in record["before"].items() if v]
    classes = sum(1 for n in wanted if record["kept"][n])
    reasons = {"its classifier did not recognise them as their class" + (f" ({classifier})" if classifier else ""):
               record["removed_low_confidence"], "they were near-copies of training images": record["removed_near_copy"],
               "their class was mostly near-copies (the gate)": record.get("removed_gated", {})}
    why, counts = max(reasons.items(), key=lambda kv: sum(kv[1].values()))
    return (f"the filter kept {kept:,} of {before:,} generated images ({100 * kept / before:.1f}%), in {classes} of "
            f"{len(wanted)} classes: {sum(counts.values()):,} were removed because {why}")


def _check_options(cache: Path, out: Path, confidence: float | None, top_share: float | None,
                   near_copy_ratio: float, max_copy_share: float | None, overwrite: bool,
                   false_positive_share: float | None = None) -> None:
    check_criteria(confidence, near_copy_ratio, max_copy_share, top_share, false_positive_share)
    if out.exists() and not overwrite:
        raise EvaluateError(f"{out}: already exists; pass --overwrite to replace it")
    if out.resolve() == cache.resolve():
        raise EvaluateError(f"{out}: the output must differ from the input cache")


class _TrainingClasses:
    """The training images, held once as uint8 and grouped by class. A class's float vectors (4 bytes
    a pixel) are made when a batch needs them, a few classes at a time (the cache is in class order),
    so a large training set is not held again as floats."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, size: int, channels: int):
        from cbdm_aug.data.convert import convert_images

        self.images = convert_images(images, size, channels)
        self.order, self.bounds = M.class_slices(labels, num_classes)
        self.pixels = functools.lru_cache(maxsize=8)(self._pixels)
        # Each training image's distance to its nearest same-class neighbour, the near-copy scale.
        self.sibling = [M.kth_neighbour_distance(self.pixels(c), 1, 1024) if self.size(c) > 1 else None
                        for c in range(num_classes)]

    def size(self, c: int) -> int:
        return int(self.bounds[c + 1] - self.bounds[c])

    def _pixels(self, c: int) -> torch.Tensor:
        return M.pixel_vectors(self.images[self.order[self.bounds[c]:self.bounds[c + 1]]])


def _rule(space: FeatureSpace, training: _TrainingClasses, train_labels: np.ndarray, top_share: float | None,
          confidence: float | None, false_positive_share: float | None, batch_size: int) -> tuple:
    """``recognised``'s criteria as ``_score`` takes them: (top_share, confidence, per-class thresholds or None).
    The thresholds come from the classifier's probabilities for the real training images, at the cache's
    size (``training.images``), as the generated images are scored."""
    if false_positive_share is None:
        return top_share, confidence, None
    p = space.predict_proba(training.images, batch_size=batch_size).numpy()
    return top_share, confidence, class_thresholds(p, np.asarray(train_labels), false_positive_share)


def _score(syn, space: FeatureSpace, training: _TrainingClasses, rule: tuple, near_copy_ratio: float,
           batch_size: int, progress: bool, desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per generated image: (recognised, near-copy, spacing); ``rule`` is ``_rule``'s. Spacing
    is the distance to the nearest same-class training image over that image's distance to its own nearest same-class neighbour."""
    from tqdm.auto import tqdm

    from cbdm_aug.progress import on_terminal

    labels = syn.labels
    confident = np.zeros(len(syn), bool)
    copy = np.zeros(len(syn), bool)
    spacing = np.full(len(syn), np.nan)
    for i in tqdm(range(0, len(syn), batch_size), desc=desc,
                  disable=not (progress and on_terminal())):  # a log gets the removed table, not redraws
        j = min(i + batch_size, len(syn))
        x = syn.batch(slice(i, j))
        y = labels[i:j]
        p = space.predict_proba(x)
        confident[i:j] = recognised(p.numpy(), y, *rule)
        pix = M.pixel_vectors(x)
        for c in np.unique(y):
            m = y == c
            if training.size(c) > 0:
                copy[i:j][m], spacing[i:j][m] = _near_copies(pix[m], training, int(c), near_copy_ratio)
    return confident, copy, spacing


def _near_copies(pix: torch.Tensor, training: _TrainingClasses, c: int,
                 near_copy_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(near-copy, spacing) of class ``c``'s generated pixel vectors ``pix`` against its training images."""
    d, nearest = M.nearest_distance(pix, training.pixels(c))
    if training.sibling[c] is not None:
        scale = training.sibling[c][nearest]
        limit = near_copy_ratio * scale
    else:  # one training image: an absolute limit, and the spacing it stands for
        scale = torch.full_like(d, M.NEAR_COPY_FALLBACK / M.NEAR_COPY_RATIO)
        limit = M.NEAR_COPY_FALLBACK
    return (d < limit).numpy(), (d / scale.clamp_min(1e-12)).numpy()


def _class_medians(values: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Each class's median of ``values`` (NaN for a class with no images)."""
    by_label, cuts = M.class_slices(labels, num_classes)
    return [float(np.median(values[by_label[cuts[c]:cuts[c + 1]]])) if cuts[c + 1] > cuts[c] else float("nan")
            for c in range(num_classes)]


def _criteria(confidence: float | None, top_share: float | None, num_classes: int, near_copy_ratio: float,
              max_copy_share: float | None, false_positive_share: float | None = None,
              thresholds: dict | None = None) -> dict:
    return {"classifier_false_positive_share": false_positive_share,
            "classifier_thresholds": thresholds,
            "classifier_threshold_rule": (None if false_positive_share is None else
                                          f"its class's probability above all but {100 * false_positive_share:g}% "
                                          "of the other classes' real training images (each class weighing the "
                                          "same)"),
            "classifier_confidence_min": confidence,
            "classifier_top_share": top_share,
            "classifier_rank": (None if top_share is None else
                                f"the class among the classifier's top {top_k(num_classes, top_share)} of "
                                f"{num_classes} and its probability >= 1/{num_classes}"),
            "near_copy": (f"RMS pixel distance to the nearest same-class training image < {near_copy_ratio} x "
                          f"that image's distance to its own nearest same-class neighbour "
                          f"(< {M.NEAR_COPY_FALLBACK} for a class with one training image)"),
            "near_copy_ratio": near_copy_ratio,
            "max_copy_share": max_copy_share}


def _write_kept(syn, out: Path, keep: np.ndarray, record: dict, batch_size: int, command: str) -> None:
    """The kept images of ``syn``, in order with their seeds, as a cache at ``out`` carrying ``record``."""
    import h5py

    from cbdm_aug.cache.writer import CacheWriter, create_cache

    attrs = syn.attrs
    plan = dict(attrs["plan"])
    plan.update(counts=record["kept"], total=int(keep.sum()))
    with atomic_path(out) as tmp:
        create_cache(tmp, labels=syn.labels[keep], seeds=syn.seeds[keep], image_shape=syn.image_shape,
                     class_names=list(syn.class_names), generator=attrs["generator"], sampler=attrs["sampler"],
                     plan=plan, shard=attrs["shard"], command=command)
        with CacheWriter(tmp) as w:
            kept = np.flatnonzero(keep)
            for i in range(0, len(kept), batch_size):
                w.write(syn.batch(kept[i:i + batch_size]))
            w.finish()
        with h5py.File(tmp, "r+") as f:
            f.attrs["filter"] = json.dumps(record)


def removed_table(record: dict) -> str:
    """A plain-text table of counts before, removed per reason and kept, one row per class."""
    from cbdm_aug.data import count_table

    names = list(record["before"])
    col = lambda key: [record[key][n] for n in names]  # noqa: E731
    both = [("in both", col("removed_both"))] if record.get("removed_both") else []  # counted in the two before
    gated = [("gated off", col("removed_gated"))] if record.get("removed_gated") else []
    return count_table(names, ("before", col("before")), ("not recognised", col("removed_low_confidence")),
                       ("near-copy", col("removed_near_copy")), *both, *gated, ("kept", col("kept")))
