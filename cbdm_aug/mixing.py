"""How real and generated images are mixed, and what a run's per-class decisions allow, in a module
without torch: the run settings (read by the CLI's ``--help``), the plugin's sampler, ``export`` and
other trainers share it.

The mixing rule (``compose``, ``fill``): pure numpy functions of the class counts, the target, the
bounds and a numpy Generator. ``BalancedSyntheticSampler`` is their torch adapter; its docstring says
what an epoch is.

``MIN_REAL_SHARE``: at least this share of a class's places in an epoch go to its real images (each
once, then repeats); generated images fill at most the rest. The evidence is in docs/decisions.md.

The decisions file. ``cbdm-aug run`` writes ``decisions.json`` beside the cache its "+ synthetic"
arms read (``OUT/cache/decisions.json`` beside ``OUT/cache/filtered.h5``): per class, the bound on
the share of its places that generated images may take (0: the class gets none). Whatever reads that
cache (the dataset wrapper, the sampler, ``export``) finds the file beside it and honours it unless
told otherwise. Two layouts are read:

- ``{"format": "cbdm-aug decisions", "version": 2, "classes": {name: {"share": s, ...}, ...}}``
  (each class's record may hold more: the evidence behind the decision);
- ``{name: share, ...}`` (run folders made before the layout above).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

MIN_REAL_SHARE = 0.5

DECISIONS_FILE = "decisions.json"
DECISIONS_FORMAT = "cbdm-aug decisions"
DECISIONS_VERSION = 2
ALL_IMAGES = "all"  # a recipe's sampling.share_file that asks for every generated image, whatever the decisions


class DecisionsError(ValueError):
    """A decisions file that cannot be read."""


def find_decisions(cache: str | Path) -> Path | None:
    """The decisions file beside a cache file (``decisions.json`` in the same folder), or None."""
    p = Path(cache).parent / DECISIONS_FILE
    return p if p.is_file() else None


def read_shares(path: str | Path) -> dict[str, float]:
    """``{class name: bound on its synthetic share in [0, 1]}`` from a decisions file (either layout
    above). Raises ``DecisionsError`` naming the file for anything else."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DecisionsError(f"decisions file {path}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict):
        raise DecisionsError(f"decisions file {path}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") == DECISIONS_FORMAT:
        classes = doc.get("classes")
        if not isinstance(classes, dict):
            raise DecisionsError(f"decisions file {path}: 'classes' must map class names to records")
        raw = {k: (v.get("share") if isinstance(v, dict) else None) for k, v in classes.items()}
    else:
        raw = doc
    shares = {}
    for name, share in raw.items():
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise DecisionsError(f"decisions file {path}: class {name!r} has share {share!r}; expected a number "
                                 "in [0, 1]")
        shares[str(name)] = float(share)
    return shares


def refused(shares: dict[str, float]) -> list[str]:
    """The classes a decisions file gives no generated image (share 0), in file order."""
    return [n for n, s in shares.items() if s <= 0]


def decisions_file(cache: str | Path, decisions="auto") -> Path | None:
    """The decisions file that applies to ``cache``: ``"auto"``, the one beside it (``find_decisions``, None
    where there is none); ``None``, none (every generated image); a path, that file (it must exist)."""
    if decisions is None:
        return None
    if isinstance(decisions, str) and decisions == "auto":
        return find_decisions(cache)
    if not isinstance(decisions, (str, Path)):
        raise TypeError(f"decisions must be 'auto', None or a path to a decisions file, got {type(decisions).__name__}")
    p = Path(decisions)
    if not p.is_file():
        raise DecisionsError(f"decisions file {p}: no such file (give 'auto', None for every image, or a path)")
    return p


# The mixing rule. Everything below is a pure function of its arguments (numpy arrays, a numpy Generator):
# ``BalancedSyntheticSampler`` is its torch adapter (dataset labels, DDP shards, ``set_epoch``).

def per_class(value, num_classes: int, class_names, what: str, fill: float) -> np.ndarray:
    """A float vector (C,) from a sequence of length C or a {class name: value} mapping (unnamed: ``fill``)."""
    if isinstance(value, Mapping):
        if class_names is None:
            raise ValueError(f"{what} given by class name, but the dataset has no class_names/classes")
        index = {n: i for i, n in enumerate(class_names)}
        unknown = [k for k in value if k not in index]
        if unknown:
            raise ValueError(f"{what} names unknown classes {unknown}; known: {list(class_names)}")
        out = np.full(num_classes, fill, dtype=np.float64)
        for k, v in value.items():
            out[index[k]] = float(v)
        return out
    out = np.asarray(value, dtype=np.float64)
    if out.shape != (num_classes,):
        raise ValueError(f"{what} needs one value per class ({num_classes}), got shape {out.shape}")
    return out


def largest_remainder(p: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts proportional to ``p`` that sum to ``total``; ties are broken at random."""
    exact = p * total
    k = np.floor(exact).astype(np.int64)
    short = total - int(k.sum())
    if short:
        order = rng.permutation(len(p))
        order = order[np.argsort(-(exact - k)[order], kind="stable")]
        k[order[:short]] += 1
    return k


def draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` items of ``pool``: each once while possible, then whole repeats plus a random part."""
    if n <= 0 or len(pool) == 0:
        return pool[:0]
    q, r = divmod(n, len(pool))
    part = pool[rng.choice(len(pool), r, replace=False)] if r else pool[:0]
    return np.concatenate([np.tile(pool, q), part]) if q else part


def water_fill(deficit: np.ndarray, quota: np.ndarray, budget: int) -> np.ndarray:
    """Synthetic counts ``<= deficit`` summing to ``min(budget, deficit.sum())`` under the smallest
    common per-class share cap ``t`` (``n_c = min(deficit_c, t * quota_c)``)."""
    if deficit.sum() <= budget:
        return deficit.copy()
    share = np.where(quota > 0, deficit / np.maximum(quota, 1), 0.0)
    lo, hi = 0.0, float(share.max())
    for _ in range(60):  # bisection on t; the fill is monotone in t
        t = (lo + hi) / 2
        if np.minimum(deficit, np.floor(t * quota)).sum() > budget:
            hi = t
        else:
            lo = t
    n = np.minimum(deficit, np.floor(lo * quota)).astype(np.int64)
    room = np.flatnonzero(n < deficit)
    extra = budget - int(n.sum())
    n[room[np.argsort(n[room] / np.maximum(quota[room], 1), kind="stable")[:extra]]] += 1
    return n


def floor_places(real_floor, k):
    """The places the real floor keeps for a class's real images: ``ceil(f * k)`` (int64, elementwise)."""
    return np.ceil(np.asarray(real_floor, dtype=np.float64) * k - 1e-9).astype(np.int64)


def compose(target: np.ndarray, num_samples: int, real_counts: np.ndarray, synthetic_counts: np.ndarray,
            rng: np.random.Generator, real_floor: np.ndarray | None = None, share_class: np.ndarray | None = None,
            share_overall: float | None = None) -> dict[str, np.ndarray]:
    """Per-class composition of one epoch: int64 (C,) ``total`` places (largest-remainder of ``target`` * epoch),
    ``real`` (distinct real images), ``synthetic`` (distinct synthetic ones) and ``repeated`` (the rest).

    ``target`` (C,) sums to 1. ``real_floor`` (C,): at least ``ceil(f_c * total_c)`` places stay real.
    ``share_class`` (C,) bounds each class's synthetic share; else ``share_overall`` bounds the epoch's, with
    the smallest common per-class cap (``water_fill``). Draws from ``rng`` only to break rounding ties."""
    k = largest_remainder(target, num_samples, rng)
    real = np.minimum(k, real_counts)
    avail = np.minimum(k - real, synthetic_counts)
    if real_floor is not None:
        avail = np.minimum(avail, k - floor_places(real_floor, k)).clip(min=0)
    if share_class is not None:
        syn = np.minimum(avail, np.floor(share_class * k).astype(np.int64))
    elif share_overall is not None:
        syn = water_fill(avail, k, int(math.floor(share_overall * num_samples)))
    else:
        syn = avail
    return {"total": k, "real": real, "synthetic": syn, "repeated": k - real - syn}


def fill(comp: dict[str, np.ndarray], order: np.ndarray, real_counts: np.ndarray, synthetic_counts: np.ndarray,
         rng: np.random.Generator) -> np.ndarray:
    """The shuffled epoch plan of a composition: indices from ``order``, grouped by class and real before
    synthetic within a class (class c's real pool, then its synthetic pool). Each class's places take its
    real images, its synthetic images (each at most once), then repeats of its real images (of its synthetic
    ones if it has no real image)."""
    starts = np.concatenate([[0], np.cumsum(real_counts + synthetic_counts)])
    parts = []
    for c in range(len(real_counts)):  # a loop over classes; all per-sample work is numpy
        s, r = starts[c], real_counts[c]
        real_pool, syn_pool = order[s:s + r], order[s + r:starts[c + 1]]
        parts.append(draw(real_pool, int(comp["real"][c]), rng))
        parts.append(draw(syn_pool, int(comp["synthetic"][c]), rng))
        parts.append(draw(real_pool if r else syn_pool, int(comp["repeated"][c]), rng))
    plan = np.concatenate(parts)
    assert len(plan) == int(comp["total"].sum())
    return plan[rng.permutation(len(plan))]


def synthetic_cap(real_counts, epoch_length: int, epochs: int, min_real_share: float | None = MIN_REAL_SHARE
                  ) -> list[int]:
    """The most distinct generated images each class can draw in a run: ``epochs`` epochs of the
    class-balanced (uniform) sampler with ``epoch_length`` places in all and the real floor
    ``min_real_share``.

    A class gets at most k = ceil(epoch_length / C) places an epoch (largest-remainder rounding); its
    real images take min(k, n_c) of them and the floor keeps ceil(f k) for them, so generated images get
    at most min(k - n_c, k - ceil(f k)) an epoch, each at most once; a class with no real image is exempt
    from the floor. Over ``epochs`` epochs: ``epochs`` times that. Images beyond it are never drawn.
    """
    C = len(real_counts)
    if C == 0 or epoch_length < 1 or epochs < 1:
        raise ValueError(f"need classes, epoch_length >= 1 and epochs >= 1, got {C}, {epoch_length}, {epochs}")
    k = -(-int(epoch_length) // C)
    floor = int(floor_places(min_real_share or 0, k))  # the sampler's own rounding of the floor
    return [int(epochs) * max(0, min(k - int(n), k - floor) if n > 0 else k) for n in real_counts]
