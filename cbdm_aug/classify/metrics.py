"""Long-tail classification metrics: top-1, balanced accuracy, per-class accuracy, and the
many/medium/few-shot split by *training* images per class (Liu et al., 2019, OLTR; the thresholds
>100, 20..100 and <20 are the literature's defaults).

Accuracies are fractions in [0, 1]. A shot group with no class in it is reported as ``None``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_accuracy


def shot_groups(train_counts: Sequence[int], many_threshold: int = 100,
                few_threshold: int = 20) -> dict[str, list[int]]:
    """Class ids per group: many (count > many_threshold), few (count < few_threshold), medium (the rest)."""
    if few_threshold > many_threshold + 1:
        raise ValueError(f"few_threshold ({few_threshold}) must be <= many_threshold + 1 ({many_threshold + 1})")
    counts = np.asarray(train_counts)
    return {"many": np.flatnonzero(counts > many_threshold).tolist(),
            "medium": np.flatnonzero((counts >= few_threshold) & (counts <= many_threshold)).tolist(),
            "few": np.flatnonzero(counts < few_threshold).tolist()}


def classification_metrics(preds: torch.Tensor, target: torch.Tensor, train_counts: Sequence[int],
                           many_threshold: int = 100, few_threshold: int = 20) -> dict:
    """All metrics of one evaluation.

    preds: int64 (N,) predicted class ids, or float (N, C) logits/scores (argmax is taken).
    target: int64 (N,) true class ids. train_counts: (C,) training images per class, which
    defines the shot groups. Returns a JSON-ready dict: ``top1``, ``balanced``, ``many``,
    ``medium``, ``few`` (mean per-class accuracy over the group's classes), ``per_class``
    (None for a class absent from the test set), ``test_counts`` and ``groups``.
    """
    num_classes = len(train_counts)
    preds, target = torch.as_tensor(preds).cpu(), torch.as_tensor(target).cpu().long()
    if preds.ndim == 2:
        preds = preds.argmax(dim=1)
    if preds.shape != target.shape or target.ndim != 1 or len(target) == 0:
        raise ValueError(f"preds and target must be non-empty (N,) tensors, got {tuple(preds.shape)} "
                         f"and {tuple(target.shape)}")
    support = torch.bincount(target, minlength=num_classes)
    # torchmetrics scores a class with no test samples as 0; mask it instead so it does not drag
    # the balanced or group means down.
    per_class = multiclass_accuracy(preds, target, num_classes, average=None).numpy().astype(float)
    per_class[support.numpy() == 0] = np.nan
    groups = shot_groups(train_counts, many_threshold, few_threshold)

    def mean(ids):
        vals = per_class[ids]
        vals = vals[~np.isnan(vals)]
        return float(vals.mean()) if len(vals) else None

    return {
        "top1": float(multiclass_accuracy(preds, target, num_classes, average="micro")),
        "balanced": mean(np.arange(num_classes)),
        **{name: mean(ids) for name, ids in groups.items()},
        "per_class": [None if np.isnan(a) else float(a) for a in per_class],
        "test_counts": support.tolist(),
        "groups": groups,
        "thresholds": {"many": f"> {many_threshold}", "medium": f"{few_threshold}..{many_threshold}",
                       "few": f"< {few_threshold}"},
    }
