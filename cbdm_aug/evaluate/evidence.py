"""Per-class evidence that generated images help, from the training images alone (cross-fitting).

The real training images are split into ``folds`` folds, stratified by class. For each fold a probe
classifier (the "+ synthetic" arm's own recipe) is trained twice on the other folds: once on the real
images alone and once with the generated images, mixed as the arm mixes them. Both probes then
classify the held-out fold. Per class c, over all folds:

- ``gain``: the change of c's recall on its held-out images, with the generated images minus without;
- ``spill``: the recall the other classes lose to c (their held-out images newly taken for c, each
  costing its class 100 / held-out images points: the confusion c's generated images cause on its
  neighbours);
- ``net = gain - spill``, in points of per-class recall, the unit of a balanced test set's accuracy.

A class keeps its generated images when ``net >= 0`` (they cost the probes no recall) and gets none
when ``net < 0``. The test set is never read.

The cautious rule: a class with fewer than ``min_judged`` real images gets no generated image, and
is not judged. Its images are still held out, so that the confusion its neighbours' generated images
cause on it counts against them. Its own held-out fold would be one or two images, and its generated
images were made by a generator that saw those very images, so the "with" probe would be judged on images its training
data was derived from; at 3 images a class's generated images were blurred, bent versions of its 3
real ones and cost it 11 points on a held-out letters folder (docs/decisions.md). The same leak
favours the generated images for the judged classes too, less the more real images a class has: a
class that loses even so is all the more likely to be hurt. The probes add every class's generated
images at once, so a class's gain and spill also carry its neighbours' images' effects.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FOLDS = 3
MIN_JUDGED = 5   # docs/decisions.md ("min_judged")
RULE = "net recall points >= 0; every class of 2+ images held out"  # what cross_fit and decide apply
SOURCES = ("own", "rule")  # what decided: the class's own held-out images, or the fixed rule


@dataclass(frozen=True)
class Decision:
    """One class's decision and the evidence behind it; ``decide`` makes them, ``cbdm-aug run`` writes them
    (``decisions.json``, ``report.json``) and the report, the plugin and other tools read them.

    ``share``: bound on the class's synthetic share (0: none of its generated images). ``used``: whether it
    gets them. ``judged``: whether the probes judged it. ``real``, ``synthetic``: its image counts. ``held``:
    its held-out images over the folds. ``gain``, ``spill``, ``net``: points of per-class recall (``effects``).
    ``estimate``: the measured effect on which it was decided (``net``), with ``lo``, ``hi`` its 95% interval;
    all None where nothing was measured. ``source``: what decided, ``"own"`` (its own held-out images) or
    ``"rule"`` (the fixed rule: no generated image, or too few real images to judge). ``why``: one line."""
    share: float
    used: bool
    judged: bool
    real: int
    synthetic: int
    why: str
    source: str
    held: int | None = None
    gain: float | None = None
    spill: float | None = None
    net: float | None = None
    estimate: float | None = None
    lo: float | None = None
    hi: float | None = None

    def __post_init__(self):
        if not 0 <= self.share <= 1:
            raise ValueError(f"Decision.share must be in [0, 1], got {self.share}")
        if self.source not in SOURCES:
            raise ValueError(f"Decision.source must be one of {SOURCES}, got {self.source!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Decision:
        """From ``to_json``'s dict, or from a run folder made before ``estimate``, ``lo``, ``hi`` and ``source``
        were recorded (then ``estimate`` is ``net``, and ``source`` "own" where the class was judged)."""
        d = dict(d)
        d.setdefault("estimate", d.get("net"))
        d.setdefault("source", "own" if d.get("judged") else "rule")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def assign_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """int64 (N,) fold of each image, -1 for an image never held out. Within a class, a random order dealt
    round-robin from a random first fold, so each fold holds about 1/folds of it and every probe still
    trains on at least one image of it. A class of one image is never held out. Classes too small to be
    judged are held out too: their held-out images are where their neighbours' generated images show
    the confusion they cause."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.full(len(labels), -1, np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) >= 2:
            out[rng.permutation(idx)] = (np.arange(len(idx)) + rng.integers(folds)) % folds
    return out


def tally(labels: np.ndarray, without: np.ndarray, with_: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """From held-out labels and the two probes' predictions (N,): ``held`` int64 (C,) images a class, and
    ``without``/``with`` int64 (C, C) confusion counts (row: true class, column: predicted)."""
    def confusion(pred):
        return np.bincount(labels * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)

    return {"held": np.bincount(labels, minlength=num_classes), "without": confusion(without), "with": confusion(with_)}


def effects(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per class c, in points of per-class recall (the balanced test set's unit): ``gain``, the change of c's
    own recall on its held-out images; ``spill``, the recall the other classes lose to c (each image of class
    k newly taken for c costs k 100 / held_k points); ``net = gain - spill``; and the image counts behind them,
    ``gained`` and ``taken``."""
    held = np.maximum(t["held"], 1).astype(float)
    d = t["with"] - t["without"]
    gained = np.diag(d).copy()
    off = d - np.diag(np.diag(d))
    taken = off.sum(axis=0)
    gain = 100 * gained / held
    spill = 100 * (off / held[:, None]).sum(axis=0)
    return {"gain": gain, "spill": spill, "net": gain - spill, "gained": gained, "taken": taken}


def decide(names: list[str], real_counts, synthetic_counts, t: dict[str, np.ndarray] | None,
           min_judged: int = MIN_JUDGED, share_when_used: float = 1.0) -> dict[str, Decision]:
    """``{class name: Decision}``. ``t`` is ``tally``'s sum over the folds (None where no probe ran); where it
    also holds the per-fold ``fold_held`` and ``fold_net`` (``cross_fit``), each judged class's estimate gets a
    95% interval (``fold_interval``)."""
    fx = effects(t) if t is not None else None
    out = {}
    for c, name in enumerate(names):
        n, s = int(real_counts[c]), int(synthetic_counts[c])
        if not s:
            out[name] = Decision(0.0, False, False, n, s, f"{name}: {n} real images; no generated image to use", "rule")
        elif n < min_judged:
            out[name] = Decision(0.0, False, False, n, s, (
                f"{name}: {n} real image{'s' * (n != 1)}, too few to judge (fewer than {min_judged}): the cautious "
                "rule, no generated images"), "rule")
        else:
            gain, spill, net = (round(float(fx[k][c]), 2) for k in ("gain", "spill", "net"))
            held, used = int(t["held"][c]), net >= 0
            lo, hi = fold_interval(t, c, net)
            effect = (f"with its {s} generated images the probes recognised {int(fx['gained'][c]):+d} of its {held} "
                      f"held-out real images ({gain:+.1f} points of its recall) and took {int(fx['taken'][c]):+d} of "
                      f"the other classes' for it ({-spill:+.1f} points of theirs): net {net:+.1f}"
                      + (f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None else ""))
            why = f"{name}: {n} real images; {effect}: " + ("used" if used else "none used (net < 0)")
            out[name] = Decision(share_when_used if used else 0.0, used, True, n, s, why, "own", held, gain, spill,
                                 net, estimate=net, lo=lo, hi=hi)
    return out


def fold_interval(t: dict[str, np.ndarray], c: int, estimate: float) -> tuple[float | None, float | None]:
    """(lo, hi): a 95% t-interval for class ``c``'s net around ``estimate``, its half-width the standard error of
    the per-fold nets (``t975(k - 1) * sd / sqrt(k)`` over the ``k`` folds that held out images of ``c``).
    (None, None) with fewer than two such folds, or without per-fold tallies."""
    from cbdm_aug.classify.paired import t975

    if "fold_net" not in t:
        return None, None
    nets = t["fold_net"][t["fold_held"][:, c] > 0, c]
    if len(nets) < 2:
        return None, None
    half = t975(len(nets) - 1) * float(np.std(nets, ddof=1)) / math.sqrt(len(nets))
    return round(estimate - half, 2), round(estimate + half, 2)


def cross_fit(images: np.ndarray, labels: np.ndarray, names: list[str], probe: Callable, out_dir: str | Path,
              folds: int = FOLDS, seed: int = 0) -> dict[str, np.ndarray]:
    """Sum of ``tally`` over the folds, with ``fold_held`` int64 (folds, C) and ``fold_net`` float (folds, C): each
    fold's held-out images and net (``effects``) per class, for ``decide``'s intervals. ``probe(fold_npz, with_synthetic, fold, run_dir)`` trains one probe on
    the npz's x_train/y_train and returns its int64 (N,) predictions on x_test (the held-out fold, in file
    order). Each fold's npz is written once into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fold = assign_folds(labels, folds, seed)
    per_fold = []
    for k in range(folds):
        held = fold == k
        npz = _fold_npz(out_dir / f"fold{k}.npz", images, labels, names, ~held, held)
        preds = [np.asarray(probe(npz, w, k, out_dir / f"fold{k}-{'with' if w else 'without'}")) for w in (False, True)]
        per_fold.append(tally(labels[held], preds[0], preds[1], len(names)))
        log.debug("evidence fold %d/%d: %d held out", k + 1, folds, int(held.sum()))
    total = {key: sum(t[key] for t in per_fold) for key in per_fold[0]}
    return total | {"fold_held": np.stack([t["held"] for t in per_fold]),
                    "fold_net": np.stack([effects(t)["net"] for t in per_fold])}


def recipe_probe(recipe, device: str = "cpu", progress: bool = False, echo=None) -> Callable:
    """``cross_fit``'s probe from a "+ synthetic" classifier recipe: with the generated images, mixed as the
    recipe mixes them (every class allowed: ``sampling.share_file=all``, whatever decisions file lies beside the
    cache); without them, the same recipe on class-balanced re-sampling of
    the real images. Both take the fold as their seed, so each pair shares initialisation and draws."""
    from dataclasses import replace

    from cbdm_aug.classify.train import train_run
    from cbdm_aug.evaluate.features import load_classifier_space
    from cbdm_aug.mixing import ALL_IMAGES

    def probe(npz: Path, with_synthetic: bool, fold: int, run_dir: Path) -> np.ndarray:
        smp = recipe.sampling
        smp = (replace(smp, share_file=ALL_IMAGES) if with_synthetic else
               replace(smp, mode="class-balanced", cache=None, share_file=None, max_synthetic_share=None))
        r = replace(recipe, seed=fold, sampling=smp, data=replace(recipe.data, train=str(npz), test=None,
                                                                  longtail="none", holdout_per_class=0))
        if not (run_dir / "metrics.json").is_file():
            t = time.time()
            train_run(r, run_dir, progress=progress, command="cross-fitted evidence probe")
            if echo:
                echo(f"  probe {fold + 1} {'with' if with_synthetic else 'without'} the generated images: "
                     f"{time.time() - t:.0f} s")
        with np.load(npz) as z:
            held = z["x_test"]
        return load_classifier_space(run_dir, device).predict_proba(held).argmax(1).numpy()
    return probe


def judge(images: np.ndarray, labels: np.ndarray, names: list[str], synthetic_counts, recipe, out_dir: str | Path,
          min_judged: int = MIN_JUDGED, folds: int = FOLDS, device: str = "cpu", progress: bool = False,
          echo=None) -> dict[str, Decision]:
    """``decide`` on ``cross_fit`` with ``recipe_probe(recipe)``: the per-class decisions for real training images
    uint8 (N, H, W, C) and ``labels``, whose classes have ``synthetic_counts`` generated images in the recipe's
    cache. No probe is trained when no class can be judged."""
    real_counts = np.bincount(labels, minlength=len(names))
    judged = [c for c in range(len(names)) if synthetic_counts[c] and real_counts[c] >= min_judged]
    t = None
    if judged:
        if echo:
            echo(f"judging {len(judged)} classes by {folds}-fold cross-fitting: {2 * folds} probe classifiers "
                 "on the training images, with and without the generated images")
        t = cross_fit(images, labels, names, recipe_probe(recipe, device, progress, echo), out_dir, folds)
    return decide(names, real_counts, synthetic_counts, t, min_judged)


def write_decisions(path: str | Path, decisions: dict[str, Decision]) -> None:
    """``decisions.json`` in the layout ``cbdm_aug.mixing.read_shares`` reads: each class's ``Decision``."""
    import json

    from cbdm_aug.atomic import write_text_atomic
    from cbdm_aug.mixing import DECISIONS_FORMAT, DECISIONS_VERSION

    doc = {"format": DECISIONS_FORMAT, "version": DECISIONS_VERSION, "rule": RULE,
           "classes": {n: d.to_json() for n, d in decisions.items()}}
    write_text_atomic(Path(path), json.dumps(doc, indent=1))


def _fold_npz(path: Path, images, labels, names, train, held) -> Path:
    from cbdm_aug.data.npz import write_npz

    if not path.exists():
        write_npz(path, x_train=images[train], y_train=labels[train], x_test=images[held], y_test=labels[held],
                  class_names=names)
    return path
