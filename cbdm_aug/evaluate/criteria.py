"""The filter's thresholds: their defaults and their ranges, in one torch-free place. ``filter_cache``,
``filter-cache``'s options and ``run``'s ``CacheSettings`` all read them (docs/decisions.md gives the
evidence for each value)."""
from __future__ import annotations

from cbdm_aug.evaluate.errors import EvaluateError

CONFIDENCE = 0.5        # keep an image whose class the real-data classifier gives at least this probability
NEAR_COPY_RATIO = 0.5   # a near-copy is closer to a training image than this x that image's own spacing
MAX_COPY_SHARE = 0.5    # run's per-class gate: a class at this share of near-copies or more gets none


def check_criteria(confidence: float | None, near_copy_ratio: float, max_copy_share: float | None) -> None:
    """``EvaluateError`` naming the first value out of range: confidence in [0, 1] (or None: no filter),
    near_copy_ratio in [0, 1], max_copy_share in (0, 1] (or None: no gate)."""
    if confidence is not None and not 0 <= confidence <= 1:
        raise EvaluateError(f"--confidence must be in [0, 1], got {confidence}")
    if not 0 <= near_copy_ratio <= 1:
        raise EvaluateError(f"--near-copy-ratio must be in [0, 1], got {near_copy_ratio}")
    if max_copy_share is not None and not 0 < max_copy_share <= 1:
        raise EvaluateError(f"--max-copy-share must be in (0, 1], got {max_copy_share}")
