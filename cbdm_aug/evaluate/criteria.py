"""The filter's thresholds: their defaults and their ranges, in one torch-free place. ``filter_cache``,
``filter-cache``'s options and ``run``'s ``CacheSettings`` all read them (docs/decisions.md gives the
evidence for each value).

The classifier criterion (``recognised``) is a rank against chance, not a fixed probability: an image of
class c passes when c is among the classifier's ``top_k(C)`` most probable classes for it and c's
probability is at least chance, 1/C. A fixed probability of 0.5 among 100 classes, under a classifier
with 34% balanced accuracy, kept 90 of 39,153 images; the rank holds across class counts and classifier
strengths (``benchmarks/results/filter_criteria.md``).
"""
from __future__ import annotations

import math

import numpy as np

from cbdm_aug.evaluate.errors import EvaluateError

TOP_SHARE = 0.1         # keep an image whose class is among the classifier's top ceil(0.1 C) classes (and >= 1/C)
CONFIDENCE = None       # an extra, fixed floor on the class's probability (filter-cache --confidence); none by default
NEAR_COPY_RATIO = 0.5   # a near-copy is closer to a training image than this x that image's own spacing
MAX_COPY_SHARE = 0.5    # run's per-class gate: a class at this share of near-copies or more gets none
MOSTLY_FILTERED = 0.5   # the cache stage says why when the filter kept less than this share of the images


def top_k(num_classes: int, top_share: float) -> int:
    """How many of the classifier's most probable classes an image's class may be among: ceil(share C)."""
    return max(1, math.ceil(top_share * num_classes - 1e-9))


def recognised(p: np.ndarray, labels: np.ndarray, top_share: float | None, confidence: float | None) -> np.ndarray:
    """bool (N,): the classifier recognises image i as its class ``labels[i]``. ``p`` is float (N, C)
    class probabilities. With ``top_share``: the class is among the ``top_k`` most probable (ties count
    for the image) and its probability is >= 1/C; with ``confidence``: it is >= ``confidence``."""
    p, labels = np.asarray(p, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    own = p[np.arange(len(labels)), labels]
    ok = np.ones(len(labels), bool)
    if top_share is not None:
        C = p.shape[1]
        ok &= ((p > own[:, None]).sum(1) < top_k(C, top_share)) & (own >= 1.0 / C)
    if confidence is not None:
        ok &= own >= confidence
    return ok


def check_criteria(confidence: float | None, near_copy_ratio: float, max_copy_share: float | None,
                   top_share: float | None = None) -> None:
    """``EvaluateError`` naming the first value out of range: confidence in [0, 1] (or None: no fixed
    floor), near_copy_ratio in [0, 1], max_copy_share in (0, 1] (or None: no gate), top_share in (0, 1]
    (or None: no rank criterion)."""
    if confidence is not None and not 0 <= confidence <= 1:
        raise EvaluateError(f"--confidence must be in [0, 1], got {confidence}")
    if not 0 <= near_copy_ratio <= 1:
        raise EvaluateError(f"--near-copy-ratio must be in [0, 1], got {near_copy_ratio}")
    if max_copy_share is not None and not 0 < max_copy_share <= 1:
        raise EvaluateError(f"--max-copy-share must be in (0, 1], got {max_copy_share}")
    if top_share is not None and not 0 < top_share <= 1:
        raise EvaluateError(f"--top-share must be in (0, 1], got {top_share}")
