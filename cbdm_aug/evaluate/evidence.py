"""Per-class evidence that generated images help, from the training images alone (cross-fitting).

The real training images are split into ``folds`` folds, stratified by class. For each fold a probe
classifier (the "+ synthetic" arm's own recipe) is trained twice on the other folds: once on the real
images alone and once with the generated images, mixed as the arm mixes them. Both probes then
classify the held-out fold. Per class c, over all folds:

- ``gain``: held-out images of c recognised with the generated images minus without them;
- ``spill``: held-out images of *other* classes taken for c with them minus without them (the
  confusion c's generated images cause on its neighbours);
- ``net = gain - spill``, in images.

A class keeps its generated images when ``net >= 0`` (they did not cost the probe a held-out image),
and gets none when ``net < 0``. The test set is never read.

The cautious rule: a class with fewer than ``min_judged`` real images gets no generated image, and
is not judged. Its held-out fold would be one or two images, and its generated images were made by
a generator that saw those very images, so the "with" probe would be judged on images its training
data was derived from; at 3 images a class's generated images were blurred, bent versions of its 3
real ones and cost it 11 points on a held-out letters folder (docs/decisions.md). The same leak
favours the generated images for the judged classes too, less the more real images a class has: a
class that loses even so is all the more likely to be hurt.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FOLDS = 3
MIN_JUDGED = 5   # docs/decisions.md ("min_judged")


def assign_folds(labels: np.ndarray, folds: int, seed: int = 0, min_judged: int = MIN_JUDGED) -> np.ndarray:
    """int64 (N,) fold of each image, -1 for an image that is never held out. Within a class of at least
    ``min_judged`` images, a random order dealt round-robin from a random first fold, so every fold holds
    some of it; a smaller class is not judged and stays in every probe's training set."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.full(len(labels), -1, np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) >= max(min_judged, 1):
            out[rng.permutation(idx)] = (np.arange(len(idx)) + rng.integers(folds)) % folds
    return out


def tally(labels: np.ndarray, without: np.ndarray, with_: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Per-class int64 (C,) counts from held-out labels and the two probes' predictions (N,):
    ``held`` images, ``right_without``/``right_with`` recognised, ``into_without``/``into_with``
    other classes' images predicted as the class."""
    def count(mask):
        return np.bincount(mask, minlength=num_classes)

    return {"held": count(labels),
            "right_without": count(labels[without == labels]), "right_with": count(labels[with_ == labels]),
            "into_without": count(without[without != labels]), "into_with": count(with_[with_ != labels])}


def decide(names: list[str], real_counts, synthetic_counts, t: dict[str, np.ndarray], min_judged: int = MIN_JUDGED,
           share_when_used: float = 1.0) -> dict:
    """One entry per class: {"share": bound on its synthetic share, "used": bool, "judged": bool,
    "real", "synthetic", "held", "gain", "spill", "net", "why": one line}. ``t`` is ``tally``'s
    sum over the folds (or None where no probe ran)."""
    out = {}
    for c, name in enumerate(names):
        n, s = int(real_counts[c]), int(synthetic_counts[c])
        e = {"real": n, "synthetic": s, "judged": False, "held": None, "gain": None, "spill": None, "net": None}
        if not s:
            e.update(used=False, why=f"{name}: {n} real images; no generated image to use")
        elif n < min_judged:
            e.update(used=False, why=(f"{name}: {n} real image{'s' * (n != 1)}, too few to judge (fewer than "
                                      f"{min_judged}): the cautious rule, no generated images"))
        else:
            gain = int(t["right_with"][c] - t["right_without"][c])
            spill = int(t["into_with"][c] - t["into_without"][c])
            e.update(judged=True, held=int(t["held"][c]), gain=gain, spill=spill, net=gain - spill,
                     used=gain - spill >= 0)
            effect = (f"with its {s} generated images the probes recognised {gain:+d} of its {e['held']} held-out "
                      f"real images and took {spill:+d} of the other classes' for it (net {gain - spill:+d})")
            e["why"] = f"{name}: {n} real images; {effect}: " + ("used" if e["used"] else "none used (net < 0)")
        e["share"] = share_when_used if e["used"] else 0.0
        out[name] = e
    return out


def cross_fit(images: np.ndarray, labels: np.ndarray, names: list[str], probe: Callable, out_dir: str | Path,
              folds: int = FOLDS, seed: int = 0, min_judged: int = MIN_JUDGED) -> dict[str, np.ndarray]:
    """Sum of ``tally`` over the folds. ``probe(train_npz, held_npz, with_synthetic, fold, run_dir)`` trains
    one probe on the npz's x_train/y_train and returns its int64 (N,) predictions on x_test (the held-out
    fold, in file order). Each fold's npz is written once into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fold = assign_folds(labels, folds, seed, min_judged)
    total = None
    for k in range(folds):
        held = fold == k
        npz = _fold_npz(out_dir / f"fold{k}.npz", images, labels, names, ~held, held)
        preds = [np.asarray(probe(npz, npz, w, k, out_dir / f"fold{k}-{'with' if w else 'without'}"))
                 for w in (False, True)]
        t = tally(labels[held], preds[0], preds[1], len(names))
        total = t if total is None else {key: total[key] + t[key] for key in total}
        log.info("evidence fold %d/%d: %d held out", k + 1, folds, int(held.sum()))
    return total


def _fold_npz(path: Path, images, labels, names, train, held) -> Path:
    from cbdm_aug.atomic import atomic_path

    if not path.exists():
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, x_train=images[train], y_train=labels[train], x_test=images[held], y_test=labels[held],
                     class_names=np.array(names))
    return path
