"""Long-tailed views of a balanced dataset, and balanced held-out splits.

The exponential profile is the one the long-tailed recognition literature and the CBDM reference
code use: class ``i`` of ``C`` keeps ``int(n_max * (1 / rho) ** (i / (C - 1)))`` images. The
step profile keeps ``n_max`` images in the first half of the classes and ``n_max / rho`` in the
rest (Cao et al., 2019).
"""
from __future__ import annotations

import numpy as np

from cbdm_aug.data.sources import DataError, LabeledImages

PROFILES = ("exp", "step")


def longtail_counts(num_classes: int, n_max: int, imbalance: float, profile: str = "exp") -> list[int]:
    """Per-class image counts of a long-tailed profile; class 0 is the head."""
    if profile not in PROFILES:
        raise DataError(f"long-tail profile must be one of {PROFILES}, got {profile!r}")
    if imbalance < 1:
        raise DataError(f"imbalance ratio must be >= 1, got {imbalance}")
    if n_max < 1:
        raise DataError(f"max images per class must be >= 1, got {n_max}")
    C, rho = num_classes, float(imbalance)
    if profile == "exp":
        counts = [int(n_max * (1.0 / rho) ** (i / (C - 1))) if C > 1 else n_max for i in range(C)]
    else:
        counts = [n_max if i < (C + 1) // 2 else int(n_max / rho) for i in range(C)]
    return [max(1, c) for c in counts]


def make_longtail(data: LabeledImages, profile: str = "exp", imbalance: float = 100.0,
                  max_per_class: int | None = None, seed: int = 0) -> LabeledImages:
    """A long-tailed subset of ``data``; which images each class keeps is drawn with ``seed``."""
    available = data.counts()
    n_max = int(max_per_class) if max_per_class else int(available.min())
    want = longtail_counts(data.num_classes, n_max, imbalance, profile)
    short = [(data.class_names[i], int(available[i]), w) for i, w in enumerate(want) if available[i] < w]
    if short:
        raise DataError("not enough images for the long-tail profile: " + ", ".join(
            f"class {n!r} has {a}, needs {w}" for n, a, w in short) + "; lower --max-per-class")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(data.labels == c))[:w] for c, w in enumerate(want)]
    index = np.sort(np.concatenate(keep))
    desc = f"{data.source} longtail={profile} rho={imbalance:g} n_max={n_max} seed={seed}"
    return data.subset(index, source=desc)


def balanced_holdout(data: LabeledImages, per_class: int, seed: int = 0) -> tuple[LabeledImages, LabeledImages]:
    """Split off ``per_class`` images of every class as a balanced test set; returns (rest, test)."""
    rng = np.random.default_rng(seed)
    test = []
    for c in range(data.num_classes):
        idx = np.flatnonzero(data.labels == c)
        if len(idx) <= per_class:
            raise DataError(f"class {data.class_names[c]!r} has {len(idx)} images; cannot hold out {per_class}")
        test.append(rng.permutation(idx)[:per_class])
    test_idx = np.sort(np.concatenate(test))
    rest_idx = np.setdiff1d(np.arange(len(data)), test_idx)
    return data.subset(rest_idx), data.subset(test_idx, source=f"{data.source} (held-out test)")


def count_table(class_names, *columns: tuple[str, list[int]], max_rows: int | None = None) -> str:
    """A plain-text table: one row per class, one column per (header, values), and the totals. Past
    ``max_rows`` classes (default ``pictures.MAX_GRID_CLASSES``) only the classes a per-class picture
    would show are listed (by the first column: the rarest, the largest, sizes in between), in class
    order, with "..." where classes are left out, so a 1,000-class table stays a screenful."""
    from cbdm_aug.pictures import MAX_GRID_CLASSES, classes_to_show

    limit = MAX_GRID_CLASSES if max_rows is None else max_rows
    n = len(class_names)
    shown = list(range(n)) if n <= limit else sorted(classes_to_show(columns[0][1] if columns else [0] * n, limit))
    headers = ["class", *(h for h, _ in columns)]
    rows, previous = [], -1
    for i in shown:
        if i != previous + 1:
            rows.append(["...", *("" for _ in columns)])
        rows.append([str(class_names[i]), *(str(int(v[i])) for _, v in columns)])
        previous = i
    if previous != n - 1:
        rows.append(["...", *("" for _ in columns)])
    rows.append(["total", *(str(int(sum(v))) for _, v in columns)])
    widths = [max(len(r[j]) for r in [headers, *rows]) for j in range(len(headers))]
    fmt = lambda r: "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines = [fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, rows)]
    if len(shown) < n:
        lines.append(f"({len(shown)} of {n} classes shown: the rarest, the largest and sizes in between)")
    return "\n".join(lines)
