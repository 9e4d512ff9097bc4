"""Per-class gating of generated images: from training-time evidence only, decide for each class
whether its generated images reach the classifier at all.

A generator that has memorised a class (a 3-image class, say) yields near-copies of its few
training images. The filter drops the copies it detects, but what it keeps are still the same few
images, slightly varied, and they displace the augmented views of the real ones: on a held-out
letters folder such a class fell (issue 21; the figures: docs/decisions.md). So the evidence is per class, on the
*unfiltered* samples, in the filter's pixel metric (``metrics.memorisation``):

- copy share: the share of the class's generated images that are near-copies of one of its
  training images (closer than ``near_copy_ratio`` times that image's distance to its own nearest
  same-class neighbour);
- spacing ratio: the median, over the class's generated images, of (distance to the nearest
  training image) / (that image's distance to its own nearest same-class neighbour). Real images
  sit about 1 apart on this scale; copies sit near 0. It is reported, not gated on.

A class whose copy share is at least ``max_copy_share`` gets no generated image; the others keep
what the filter kept. The test set is never read.
"""
from __future__ import annotations

import numpy as np


def gate_classes(names: list[str], real_counts, generated, near_copies, spacing, max_copy_share: float | None) -> dict:
    """One entry per class name: {"used": bool, "real": n, "generated": g, "copy_share": s,
    "spacing_ratio": m or None, "why": one line}. ``generated`` and ``near_copies`` are per-class
    counts of the unfiltered samples, ``spacing`` per-class medians of the spacing ratio (nan
    where a class has no sample); ``max_copy_share`` None passes every class."""
    out = {}
    for c, name in enumerate(names):
        g, k, n = int(generated[c]), int(near_copies[c]), int(real_counts[c])
        share = k / g if g else 0.0
        m = None if not g or np.isnan(spacing[c]) else float(spacing[c])
        used = max_copy_share is None or not g or share < max_copy_share
        detail = (f"{name}: {n} real image{'s' * (n != 1)}; {100 * share:.0f}% of its {g} generated images were "
                  f"near-copies of them" + (f" (median spacing {m:.2f}x the real images' own)" if m is not None else ""))
        if not g:
            why = f"{name}: {n} real images; none generated"
        elif used:
            why = detail + ": used, after the filter"
        else:
            why = detail + f": none used (the gate drops a class at {100 * max_copy_share:.0f}% or more)"
        out[name] = {"used": used, "real": n, "generated": g, "copy_share": share, "spacing_ratio": m, "why": why}
    return out
