"""Proxy rare classes: evidence with power for the classes too small to judge on their own held-out images.

A class of 3 real images holds out one image a fold: its own evidence is noise. So, inside the same
cross-fitting probes (no extra probe is trained), some classes with plenty of images (``PROXY_MIN_REAL``)
are cut, in one fold's training images, down to the size of the truly rare classes; the images cut are
added to the fold's held-out images, so a proxy is judged on dozens of held-out images. Each fold has
up to two proxies, cut to the same size:

- a **bare** proxy gets none of its generated images in the "with" probe. The change of its recall
  between the probes is (a), the spill onto a class that small from the other classes' generated images;
- an **own** proxy gets its generated images. Its net (``evidence.effects``' gain minus the recall it takes
  from the other classes) is (b), what a class that small nets with its own images and everybody else's.

The effect of giving a class of that size its own images is measured on the own proxy itself: ``evidence.cross_fit``
trains a third probe a fold, with every class's images but the own proxy's, and the own proxy's net in the "with"
probe against that one is the paired effect (``proxy_paired``), on the same class and held-out images. ``(b) - (a)``,
two different classes' changes, is what a run folder from before the third probe has (at MNIST-LT n_max 3000 it
refused a 3-image class on a bare proxy's own luck: ``benchmarks/results/paired_proxies.md``). **The leak:** the generator saw
every real image of the proxy, the held-out and cut ones included, so its images of an "own" proxy carry
what many images taught it, not what 3 would. (b) is therefore an upper bound on what a truly rare class's
images do: a proxy that says "no" is believed (even the favoured images lost); one that says "yes"
relies on the upper bound. ``evidence.decide`` applies both to the truly rare classes of the same size (the nearest
size cut: ``nearest``), with ``source="proxy"``.

A proxy's rows and columns are left out of that fold's own-class tallies (``mask``): in that fold it is
not the class it is, so neither its own evidence nor the spill its neighbours cause on it is charged there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROXY_MIN_REAL = 30   # a proxy cut to 8 images still holds out 22 (docs/decisions.md, "proxies")
MAX_SIZES = 3         # one size a fold at most: the folds are the replicates


@dataclass(frozen=True)
class Proxy:
    """One proxy: class ``cls`` cut to ``size`` real training images in fold ``fold``'s probes; ``own``: whether
    the "with" probe gets its generated images."""
    fold: int
    cls: int
    size: int
    own: bool


def proxy_sizes(real_counts, min_judged: int) -> list[int]:
    """The sizes to cut proxies to: the distinct real counts of the classes under ``min_judged`` (and of at least 2,
    so that they have held-out images), at most ``MAX_SIZES`` of them (smallest, middle, largest)."""
    sizes = sorted({int(n) for n in real_counts if 2 <= n < min_judged})
    if len(sizes) > MAX_SIZES:
        sizes = [sizes[0], sizes[len(sizes) // 2], sizes[-1]]
    return sizes


def nearest(n: int, sizes) -> int:
    """The size in ``sizes`` nearest ``n`` on a log scale (5 is nearer 8 than 3: a 5-image class has 1.6 times
    a 3-image class's images and 0.6 times an 8-image one's); the smaller on a tie."""
    return min(sorted(sizes), key=lambda s: abs(np.log(s / n)))


def plan(real_counts, synthetic_counts, min_judged: int, folds: int, seed: int = 0,
         unseen: bool = False) -> list[Proxy]:
    """The proxies of each fold: fold k is cut to ``proxy_sizes[k % len]``; its "own" proxy is a class with generated
    images, its "bare" one preferably a class without (its images would be withheld anyway). Classes are taken in a
    seeded order, each at most once while classes last, and never a class under ``PROXY_MIN_REAL`` real images, so a
    truly rare class is never a proxy. Empty when no class is rare or none is large enough.

    ``unseen``: the own proxies' images come from a generator fitted without the images they are judged on
    (``unseen_holdout``), so any large class can be one (that generator makes its images whether the cache has some
    or not), and each class is an own proxy once: one generator can leave out one fold's held-out images of a class,
    not two folds'."""
    real, syn = np.asarray(real_counts), np.asarray(synthetic_counts)
    sizes = proxy_sizes(real, min_judged)
    big = np.flatnonzero(real >= PROXY_MIN_REAL)
    if not sizes or not len(big):
        return []
    order = np.random.default_rng(seed).permutation(big)
    with_images = [int(c) for c in order if syn[c] > 0]
    bare_first = [int(c) for c in order if syn[c] == 0] + with_images
    out, uses = [], {}
    for k in range(folds):
        size = sizes[k % len(sizes)]
        if unseen:
            owned = {p.cls for p in out if p.own}
            own = _next([c for c in with_images + bare_first if c not in owned], uses, set(), folds - 1)
        else:
            own = _next(with_images, uses, set(), folds - 1)
        bare = _next(bare_first, uses, {own}, folds - 1)
        out += [Proxy(k, c, size, o) for c, o in ((own, True), (bare, False)) if c is not None]
        for c in {own, bare} - {None}:
            uses[c] = uses.get(c, 0) + 1
    return out


def _next(candidates: list[int], uses: dict, taken: set, most: int) -> int | None:
    """The candidate used least so far (the first of those), not ``taken`` in this fold and used fewer than ``most``
    times, so that every proxy keeps its own evidence in at least one fold; None when there is none."""
    free = [c for c in candidates if c not in taken and uses.get(c, 0) < most]
    return min(free, key=lambda c: uses.get(c, 0)) if free else None


def unseen_count(p: Proxy, real_counts, planned_counts) -> int:
    """How many images the unseen generator makes for own proxy ``p``: as many as the cache plans for the rarest class
    of ``p.size`` real images or more (the sizes are the truly rare classes' own, so usually that class itself)."""
    real, planned = np.asarray(real_counts), np.asarray(planned_counts)
    fit = real >= p.size
    return int(planned[fit][np.argmin(real[fit])]) if fit.any() else 0


def cut(labels: np.ndarray, train: np.ndarray, proxies: list[Proxy], seed: int = 0) -> np.ndarray:
    """bool (N,): the training images of ``proxies`` (one fold's) to move to the held-out set, all but ``size`` of
    each proxy's, chosen by a generator seeded from (seed, fold, class)."""
    out = np.zeros(len(labels), bool)
    for p in proxies:
        idx = np.flatnonzero(train & (labels == p.cls))
        rng = np.random.default_rng([seed, p.fold, p.cls])
        out[rng.permutation(idx)[p.size:]] = True
    return out


def mask(t: dict[str, np.ndarray], classes: list[int]) -> dict[str, np.ndarray]:
    """One fold's tally without the rows and columns of ``classes`` (its proxies)."""
    t = {k: v.copy() for k, v in t.items()}
    for c in classes:
        t["held"][c] = 0
        for k in ("with", "without", "discord"):
            if k in t:
                t[k][c, :] = 0
                t[k][:, c] = 0
    return t


def measure(t: dict[str, np.ndarray], p: Proxy, others: list[int]) -> tuple[float, float, int]:
    """(effect, its sampling variance, held-out images) of proxy ``p`` from its fold's unmasked tally, in points of
    recall: a bare proxy's recall change (a); an own proxy's net (b), its recall change minus the recall it took from
    the other classes but ``others`` (the fold's other proxies, and the truly rare classes: one held-out image of a
    3-image class is 33 points of (b) and as much noise; what the others' images take from a class that small is (a)'s
    to measure)."""
    held = np.maximum(t["held"], 1).astype(float)
    d = t["with"] - t["without"]
    disc = t["discord"]
    c = p.cls
    effect = 100 * d[c, c] / held[c]
    var = (100 / held[c]) ** 2 * disc[c, c]
    if p.own:
        rows = [k for k in range(len(held)) if k != c and k not in others]
        effect -= 100 * float(sum(d[k, c] / held[k] for k in rows))
        var += float(sum((100 / held[k]) ** 2 * disc[k, c] for k in rows))
    return float(effect), float(var), int(t["held"][c])
