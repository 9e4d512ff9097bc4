"""Per-class evidence that generated images help, from the training images alone (cross-fitting).

The real training images are split into ``folds`` folds, stratified by class. For each fold a probe
classifier (the "+ synthetic" arm's own recipe) is trained twice on the other folds: once on the real
images alone and once with the generated images, mixed as the arm mixes them. Both probes then
classify the held-out fold. Per class c, over all folds:

- ``gain``: the change of c's recall on its held-out images, with the generated images minus without;
- ``spill``: the recall the other classes lose to c (their held-out images newly taken for c, each
  costing its class 100 / held-out images points: the confusion c's generated images cause on its
  neighbours), over the classes of ``min_judged`` images or more (what the others take from a truly rare
  class is measured by the proxies, below);
- ``net = gain - spill``, in points of per-class recall, the unit of a balanced test set's accuracy.

**Beyond the noise.** Two weak probes disagree on many images whatever the generated images do, and the
probes add every class's images at once, so a net is only charged to a class's images when it stands out
of the noise (``interval``): the churn of the held-out images between the two probes of a fold (McNemar's
discordant images: each image that only one probe gives to c counts as one coin flip), scaled by how much
more than that churn the per-fold nets actually spread (``noise``: the training noise). That scale is pooled
over every class and fold (C classes x 2 df, not one class's 2 df, whose t quantile of 4.3 made every
interval [-597, +669]-wide), so a class's interval has the power its held-out images allow. A class's images
are used when the whole interval is above 0, refused when it is below 0, and otherwise get ``MIDDLE_SHARE``
of its places (the middle rule: half of what the real floor leaves).

**The rarest classes** (under ``min_judged`` real images) hold out one or two images a fold: their own evidence
would be noise. They are decided from proxies (``evaluate/proxies.py``: classes with plenty of images cut, inside
the same probes, to the rare classes' sizes, and judged on every image cut; their own images' effect on the same
proxy, with and without them, from a third probe a fold), with ``source="proxy"``: each from
the proxies cut to its size (``ProxyEvidence.by_size``; the nearest size cut, on a log scale, when up to three
sizes stand for more). Pooling every size let the smallest sizes decide for the largest: at MNIST-LT n_max 3000
the pooled effect was +12.3 [+6.3, +18.4], used, and the 13-image class lost -3.0 [-4.7, -1.3] against its twin;
at size 13 alone it is +7.3 [-2.5, +17.1], the middle rule (the leak, below, is also largest at the smallest
sizes: ``benchmarks/results/proxy_leak.md``). Where the proxies show that a class that small loses to the other
classes' generated images, the spill lever acts on the neighbours: the classes that the "with" probe gave a rare
class's held-out images to get at most ``MIDDLE_SHARE``. (Its other side, an inconclusive rare class keeping all
of its images against the loss, was measured on the one row where it fired and removed: on our MNIST 300->3
folder it cost few-shot -0.5 [-1.0, +0.1] points and put the 8-image class at -2.3 [-4.1, -0.4] against its twin,
+0.9 without it; ``benchmarks/results/lever_sides_mnist.md``.) With no class large enough to stand in, nothing is
measured and a rare class gets none (the cautious rule of before, kept only there). The test set is never read.

**The leak.** The generator was fitted on every real image, held-out folds included, so a "with" probe is
judged on images its generated training data was derived from. That favours the generated images, the more
so the fewer real images a class has; for the proxies, whose generator saw all of their images, it makes
(b) an upper bound (``evaluate/proxies.py``): a refusal from it is sound, a use relies on it. Measured on our
MNIST 300->3 folder against a generator fitted without the proxies' images: +13.4 [+10.3, +16.5] points, largest
at the smallest size (``benchmarks/results/proxy_leak.md``). So ``run`` removes it where it fits the generator
itself: ``unseen_holdout`` names the images a first generator must not see (each own proxy's held-out and cut
images; ``proxies.plan(unseen=True)``: one fold's proxy a class), the own proxies' images come from that generator
(``cross_fit``'s ``unseen``), and the run's generator continues from it on every image. Where the generator is
reused (``run --generator``, the benchmarks' shared generators), the proxies stay the upper bound, and the
decisions say which (``ProxyEvidence.unseen``).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from cbdm_aug.evaluate import proxies as px
from cbdm_aug.mixing import MIN_REAL_SHARE

log = logging.getLogger(__name__)

FOLDS = 3
MIN_JUDGED = 20  # docs/decisions.md ("min_judged"): below it a class is decided from proxies of its size
MIDDLE_SHARE = (1 - MIN_REAL_SHARE) / 2  # docs/decisions.md ("the middle rule"): half of what the floor leaves
Z95 = 1.96
# what cross_fit and decide apply (a change reruns a run's evidence stage)
RULE = ("95% interval of the net recall points, the churn scaled by the probes' noise pooled over every class and fold: "
        "above 0 used, below 0 none, else the middle share; under min_judged real images from the proxies cut to "
        "its size (the nearest size cut), their own images judged on the same proxies with and without them; when the proxies see a class that small lose to the others' images, "
        "neighbours of a rare class bounded")
SOURCES = ("own", "proxy", "rule")  # its own held-out images, proxies of its size, or a fixed rule
VERDICTS = {"used": "used", "middle": "the middle rule", "none": "none used"}


@dataclass(frozen=True)
class Decision:
    """One class's decision and the evidence behind it; ``decide`` makes them, ``cbdm-aug run`` writes them
    (``decisions.json``, ``report.json``) and the report, the plugin and other tools read them.

    ``share``: bound on the class's synthetic share (0: none of its generated images; ``MIDDLE_SHARE``: the middle
    rule or a bounded neighbour). ``used``: whether it gets any. ``judged``: whether the probes judged it on its own
    held-out images. ``real``, ``synthetic``: its image counts. ``held``: its held-out images over the folds.
    ``gain``, ``spill``, ``net``: points of per-class recall (``effects``). ``estimate``: the measured effect on
    which it was decided (its ``net``, or for a rare class the proxies' effect of a class's own images at its
    size), with ``lo``, ``hi`` its 95% interval; all None where nothing was measured. ``source``: what decided,
    ``"own"`` (its own held-out images), ``"proxy"`` (proxies of its size) or ``"rule"`` (a fixed rule: no
    generated image, or nothing to measure with). ``why``: one line."""
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


@dataclass(frozen=True)
class Interval:
    """An effect in points with its 95% interval (``lo``, ``hi``; None where no noise level could be measured)."""
    estimate: float
    lo: float | None
    hi: float | None

    @property
    def verdict(self) -> str:
        """"used" above 0, "none" below 0, "middle" across it (without an interval: the estimate's sign)."""
        lo, hi = (self.estimate, self.estimate) if self.lo is None else (self.lo, self.hi)
        return "used" if lo > 0 else "none" if hi < 0 else "middle"

    def text(self) -> str:
        return f"{self.estimate:+.1f}" + (f" [{self.lo:+.1f}, {self.hi:+.1f}]" if self.lo is not None else "")


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


def unseen_holdout(labels: np.ndarray, planned_counts, min_judged: int = MIN_JUDGED, folds: int = FOLDS,
                   seed: int = 0) -> tuple[list[px.Proxy], np.ndarray]:
    """(the proxies ``cross_fit`` will cut with ``unseen``, bool (N,): the training images the generator of the own
    proxies' images must not see): each own proxy's images but the ``size`` its fold's probes train on (the ones it
    is judged on), computed before any generator is fitted. ``planned_counts``: the cache's plan per class (which
    classes get images; the own proxies' counts, ``proxies.unseen_count``)."""
    labels = np.asarray(labels)
    real = np.bincount(labels, minlength=len(planned_counts))
    plan = px.plan(real, planned_counts, min_judged, folds, seed, unseen=True)
    fold = assign_folds(labels, folds, seed)
    out = np.zeros(len(labels), bool)
    for p in plan:
        if p.own:
            train = fold != p.fold
            kept = train & ~px.cut(labels, train, [p], seed)
            out |= (labels == p.cls) & ~kept
    return plan, out


def tally(labels: np.ndarray, without: np.ndarray, with_: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """From held-out labels and the two probes' predictions (N,): ``held`` int64 (C,) images a class, ``without``/
    ``with`` int64 (C, C) confusion counts (row: true class, column: predicted) and ``discord`` int64 (C, C): the
    images of each row's class that exactly one of the two probes gives to the column's class."""
    def counts(true, pred):
        return np.bincount(true * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)

    differ = without != with_
    return {"held": np.bincount(labels, minlength=num_classes), "without": counts(labels, without),
            "with": counts(labels, with_),
            "discord": counts(labels[differ], without[differ]) + counts(labels[differ], with_[differ])}


def effects(t: dict[str, np.ndarray], counted: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per class c, in points of per-class recall (the balanced test set's unit): ``gain``, the change of c's
    own recall on its held-out images; ``spill``, the recall the other classes lose to c (each image of class
    k newly taken for c costs k 100 / held_k points), over the classes ``counted`` (bool (C,), default all: ``decide``
    leaves out the truly rare ones, whose one held-out image a fold is 33-100 points and as much noise; what the
    others take from them is the proxies' to measure); ``net = gain - spill``; the image counts behind them,
    ``gained`` and ``taken``; and ``var``, the net's sampling variance (points squared) from the discordant images
    (each a coin flip under "the images do nothing"; 0 without ``discord``)."""
    held = np.maximum(t["held"], 1).astype(float)
    rows = np.ones(len(held), bool) if counted is None else np.asarray(counted, bool)
    d = t["with"] - t["without"]
    gained = np.diag(d).copy()
    off = (d - np.diag(np.diag(d))) * rows[:, None]
    taken = off.sum(axis=0)
    gain = 100 * gained / held
    spill = 100 * (off / held[:, None]).sum(axis=0)
    disc = t.get("discord", np.zeros_like(d))
    disc = disc * rows[:, None] + np.diag(np.diag(disc)) * ~rows[:, None]  # a class's own row always counts
    w = (100 / held[:, None]) ** 2 * disc  # each discordant image of row k: a variance of (100 / held_k)^2
    return {"gain": gain, "spill": spill, "net": gain - spill, "gained": gained, "taken": taken,
            "var": w.sum(axis=0)}


@dataclass(frozen=True)
class Noise:
    """The probes' noise, pooled over every class and fold (``noise``): ``phi``, how many times the held-out images'
    churn (McNemar's discordant images) the per-fold nets actually spread (at least 1), estimated on ``df`` degrees of
    freedom. An effect's 95% half-width is ``t975(df) * sqrt(phi * var)``; ``df`` 0: no spread measured, the churn alone
    at 1.96."""
    phi: float = 1.0
    df: int = 0

    def half(self, var: float) -> float:
        from cbdm_aug.classify.paired import t975

        return (t975(self.df) if self.df else Z95) * math.sqrt(self.phi * max(var, 0.0))

    def text(self) -> str:
        return f"noise {self.phi:.1f}x the churn on {self.df} df" if self.df else "noise: the churn alone"


def noise(t: dict[str, np.ndarray]) -> Noise:
    """``Noise`` from ``cross_fit``'s per-fold nets and their churn variances (``fold_net``, ``fold_var``): per class,
    the nets' spread over its ``k`` folds, ``(k - 1) s^2 / mean(var_k)``, is ``phi`` times a chi-square on (k - 1) df;
    summed over the classes it gives ``phi`` on many df (issue 34: one class's 3 folds alone give 2 df, a t quantile of
    4.3 and intervals like [-597, +669]). A fold where nothing moved a class counts (its net 0 is evidence of the
    spread); a class that moved in no fold does not."""
    if "fold_var" not in t:
        return Noise()
    q, df = 0.0, 0
    for c in range(t["fold_net"].shape[1]):
        ok = t["fold_held"][:, c] > 0
        x, v = t["fold_net"][ok, c], t["fold_var"][ok, c]
        if len(x) < 2 or not v.mean() > 0:
            continue
        q += float((len(x) - 1) * np.var(x, ddof=1) / v.mean())
        df += len(x) - 1
    return Noise(max(1.0, q / df), df) if df else Noise()


def interval(t: dict[str, np.ndarray], c: int, estimate: float, var: float, level: Noise | None = None) -> Interval:
    """Class ``c``'s net with its 95% interval: the held-out images' churn ``var`` scaled by the pooled noise
    (``level``, default ``noise(t)``). No interval where no churn was counted (a tally without discordant counts)."""
    if "discord" not in t:
        return Interval(round(estimate, 2), None, None)
    half = (level or noise(t)).half(var)
    return Interval(round(estimate, 2), round(estimate - half, 2), round(estimate + half, 2))


def pooled(values, variances, level: Noise = Noise()) -> Interval | None:
    """The mean of replicate effects (points) with the interval of their summed churn variances scaled by the pooled
    noise (``level``); None without a replicate. The replicates' own spread (2 df for 3 folds) is not used: ``level``
    already measures the probes' spread, on every class's folds."""
    v = np.asarray(values, float)
    if not len(v):
        return None
    half = level.half(float(np.sum(variances))) / len(v)
    return Interval(round(float(v.mean()), 2), round(float(v.mean()) - half, 2), round(float(v.mean()) + half, 2))


@dataclass(frozen=True)
class ProxyEvidence:
    """What the proxies measured (``evaluate/proxies.py``), pooled over the folds: ``bare``, the recall change of
    a proxy without its images (a: the others' spill onto a class that small); ``own``, a proxy's net with them
    (b); ``effect``, the effect of a class's own images at that size: with ``paired``, the own proxies' net with their
    images against without them, every other class's images in both probes (``cross_fit``'s third probe); else own -
    bare, two classes' changes (the half-widths added in quadrature). ``sizes``: the sizes cut to; ``held``: images
    judged on."""
    bare: Interval | None
    own: Interval | None
    effect: Interval | None
    sizes: tuple[int, ...]
    held: int
    unseen: bool = False  # the own proxies' images came from a generator that never saw the images judged on
    paired: bool = False  # ``effect`` measured on the own proxies with and without their images (``cross_fit``)

    @classmethod
    def of(cls, t: dict[str, np.ndarray], level: Noise = Noise(), size: int | None = None) -> ProxyEvidence | None:
        """From ``cross_fit``'s ``proxy_*`` arrays, their churn scaled by the pooled noise ``level``: the proxies cut
        to ``size`` (None: every size); None where no proxy was cut (to it)."""
        if not len(t.get("proxy_class", ())):
            return None
        keep = np.ones(len(t["proxy_class"]), bool) if size is None else t["proxy_size"] == size
        if not keep.any():
            return None
        own = t["proxy_own"].astype(bool)
        paired = t.get("proxy_paired", np.zeros(len(own), bool)).astype(bool)
        bare = pooled(t["proxy_effect"][~own & keep], t["proxy_var"][~own & keep], level)
        mine = pooled(t["proxy_effect"][own & ~paired & keep], t["proxy_var"][own & ~paired & keep], level)
        effect = pooled(t["proxy_effect"][paired & keep], t["proxy_var"][paired & keep], level)
        if effect is None and bare is not None and mine is not None:  # no third probe: two classes' changes
            half = math.hypot(mine.hi - mine.estimate, bare.hi - bare.estimate)
            e = mine.estimate - bare.estimate
            effect = Interval(round(e, 2), round(e - half, 2), round(e + half, 2))
        unseen = t.get("proxy_unseen", np.zeros(len(own), bool)).astype(bool)[own & ~paired & keep]
        held = t["proxy_held"][keep & ~paired].sum()  # each image judged once per row it is in, not again when paired
        return cls(bare, mine, effect, tuple(sorted({int(x) for x in t["proxy_size"][keep]})),
                   int(held), bool(len(unseen) and unseen.all()), bool((paired & keep).any()))

    @classmethod
    def by_size(cls, t: dict[str, np.ndarray], level: Noise = Noise()) -> dict[int, ProxyEvidence]:
        """``{size: the proxies cut to it}``, the sizes where both an own and a bare proxy were measured."""
        out = {int(s): cls.of(t, level, int(s)) for s in sorted(set(t.get("proxy_size", np.zeros(0)).tolist()))}
        return {s: e for s, e in out.items() if e is not None and e.effect is not None}


def decide(names: list[str], real_counts, synthetic_counts, t: dict[str, np.ndarray] | None,
           min_judged: int = MIN_JUDGED, share_when_used: float = 1.0,
           middle_share: float = MIDDLE_SHARE, bound: bool = True) -> dict[str, Decision]:
    """``{class name: Decision}``. ``t`` is ``cross_fit``'s tally (None where no probe ran). A class of
    ``min_judged`` real images or more is decided on its own held-out images (``interval``'s verdict); a rarer one
    from the proxies (``ProxyEvidence``), or none where no proxy was cut (the cautious rule). Then, with ``bound``, the
    lever on the spill (``bound_neighbours``; ``benchmarks/redecide.py`` measures it against none)."""
    counted = np.asarray(real_counts) >= min_judged
    fx = effects(t, counted) if t is not None else None
    level = noise(t) if t is not None else Noise()
    proxy = ProxyEvidence.of(t, level) if t is not None else None  # every size: the spill lever's trigger
    sized = ProxyEvidence.by_size(t, level) if t is not None else {}
    shares = {"used": share_when_used, "middle": middle_share, "none": 0.0}
    out = {}
    for c, name in enumerate(names):
        n, s = int(real_counts[c]), int(synthetic_counts[c])
        if not s:
            out[name] = Decision(0.0, False, False, n, s, f"{name}: {n} real images; no generated image to use", "rule")
        elif n < min_judged or fx is None:
            mine = sized[px.nearest(n, sized)] if sized else proxy  # its size's proxies (the nearest size cut)
            out[name] = _rare(name, n, s, mine, min_judged, shares, level)
        else:
            out[name] = _own(name, c, n, s, t, fx, shares, level, min_judged)
    return bound_neighbours(out, names, real_counts, t, proxy, min_judged, middle_share) if bound else out


def _own(name: str, c: int, n: int, s: int, t: dict, fx: dict, shares: dict, level: Noise,
         min_judged: int) -> Decision:
    """A class decided on its own held-out images."""
    gain, spill, net = (round(float(fx[k][c]), 2) for k in ("gain", "spill", "net"))
    held = int(t["held"][c])
    iv = interval(t, c, net, float(fx["var"][c]), level)
    verdict = iv.verdict
    effect = (f"with its {s} generated images the probes recognised {int(fx['gained'][c]):+d} of its {held} held-out "
              f"real images ({gain:+.1f} points of its recall) and took {int(fx['taken'][c]):+d} of the other classes' "
              f"(those of {min_judged} images or more) for it ({-spill:+.1f} points of theirs): net {iv.text()} ({level.text()})")
    why = f"{name}: {n} real images; {effect}: {_verdict_text(verdict, shares)}"
    return Decision(shares[verdict], shares[verdict] > 0, True, n, s, why, "own", held, gain, spill, net,
                    estimate=iv.estimate, lo=iv.lo, hi=iv.hi)


def _rare(name: str, n: int, s: int, proxy: ProxyEvidence | None, min_judged: int, shares: dict,
          level: Noise) -> Decision:
    """A class under ``min_judged`` real images, decided from the proxies of its size, or the cautious rule."""
    few = (f"{name}: {n} real image{'s' * (n != 1)}, " + (f"too few to judge on its own (fewer than {min_judged})"
                                                        if n < min_judged else "not judged (no probe ran)"))
    if proxy is None or proxy.effect is None:  # nothing measured: the cautious rule of before issue 34
        return Decision(0.0, False, False, n, s, f"{few}, and no class large enough to stand in for it (proxies need "
                        f"{px.PROXY_MIN_REAL} real images): the cautious rule, no generated images", "rule")
    iv = proxy.effect
    verdict, text = iv.verdict, _verdict_text(iv.verdict, shares)
    why = (f"{few}; proxies (classes cut to {', '.join(map(str, proxy.sizes))} real images, judged on {proxy.held} "
           f"held-out images): with their own generated images such a class netted {proxy.own.text()} points ("
           + ("from a generator fitted without the images they are judged on" if proxy.unseen else
              "an upper bound: the generator saw the proxies' images") + f"), without them {proxy.bare.text()}; its own images' effect "
           + ("(the same proxies with and without them, every other class's images in both) " if proxy.paired else
              "(the two measures' difference) ") + f"{iv.text()} ({level.text()}): {text}")
    return Decision(shares[verdict], shares[verdict] > 0, False, n, s, why, "proxy",
                    estimate=iv.estimate, lo=iv.lo, hi=iv.hi)


def _verdict_text(verdict: str, shares: dict) -> str:
    if verdict == "middle":
        return (f"inconclusive, the middle rule (its generated images take at most {100 * shares['middle']:.0f}% of "
                "its places)")
    return {"used": "used", "none": "none used"}[verdict] + (" (interval above 0)" if verdict == "used" else
                                                             " (interval below 0)")


def bound_neighbours(out: dict[str, Decision], names: list[str], real_counts, t: dict | None,
                     proxy: ProxyEvidence | None, min_judged: int, bound: float) -> dict[str, Decision]:
    """The lever on the spill: where the bare proxies show a class under ``min_judged`` images losing recall to the
    other classes' generated images beyond the noise (interval below 0), every class that the "with" probe gave one
    of a rare class's held-out images to gets at most ``bound`` of its places."""
    if t is None or proxy is None or proxy.bare is None or proxy.bare.verdict != "none":
        return out
    out = dict(out)
    for r, rare in enumerate(names):
        if not 1 <= real_counts[r] < min_judged or not t["held"][r]:
            continue
        for j in np.flatnonzero(t["with"][r] > 0):
            e = out[names[j]]
            if j != r and e.share > bound:
                out[names[j]] = replace(e, share=bound, why=(
                    f"{e.why}; bounded to {100 * bound:.0f}% of its places: the probe gave {int(t['with'][r, j])} of "
                    f"{rare}'s {int(t['held'][r])} held-out images to it, and a class of {int(real_counts[r])} images "
                    f"loses {proxy.bare.text()} points to the others' generated images (proxies)"))
    return out


def cross_fit(images: np.ndarray, labels: np.ndarray, names: list[str], probe: Callable, out_dir: str | Path,
              folds: int = FOLDS, seed: int = 0, synthetic_counts=None,
              min_judged: int = MIN_JUDGED, unseen: Callable | None = None,
              withhold_own: bool = True) -> dict[str, np.ndarray]:
    """Sum of ``tally`` over the folds without the proxies' rows and columns, with ``fold_held`` int64 (folds, C) and
    ``fold_net`` float (folds, C) per fold for ``interval``, and the proxies' measurements (``proxy_fold``,
    ``proxy_class``, ``proxy_size``, ``proxy_own``, ``proxy_held``, ``proxy_effect``, ``proxy_var``: one entry a
    proxy; ``evaluate/proxies.py``), cut when ``synthetic_counts`` is given and a class is under ``min_judged``.
    ``probe(fold_npz, with_synthetic, fold, run_dir)`` trains one probe on the npz's x_train/y_train (with the
    generated images of every class but the bare proxies named in ``shares_path(fold_npz)``; with ``with_synthetic`` a
    path, of the classes that shares file allows) and returns its int64 (N,) predictions on x_test (the held-out
    images, in file order). Each fold's npz is written once into ``out_dir``.

    ``withhold_own``: a fold with an own proxy trains a third probe, with every class's images but the own proxy's
    (``withheld_path``), so that what its own images do is measured on the same class and held-out images (third
    probe against "with", ``proxy_paired``) and not as the difference between two classes' changes (the own proxy's
    (b) minus another class's (a): at MNIST-LT n_max 3000 a bare proxy that happened to gain +12.9 from the others'
    images made a 3-image class's own images -10.5). The own proxy in the third probe is one more bare proxy.
    ``unseen(proxy, path)``: writes at ``path`` the cache the fold's "with" probe reads instead of the recipe's, its
    own proxy's images from a generator that never saw the images it is judged on (``unseen_holdout``, whose plan
    this then is: ``synthetic_counts`` are the cache's planned counts)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fold = assign_folds(labels, folds, seed)
    C = len(names)
    real = np.bincount(labels, minlength=C)
    counted = real >= min_judged  # the classes whose held-out images a net counts (``effects``)
    rare = np.flatnonzero(~counted).tolist()  # their held-out images: (a)'s to measure, not (b)'s
    plan = [] if synthetic_counts is None else px.plan(real, synthetic_counts, min_judged, folds, seed,
                                                         unseen=unseen is not None)
    per_fold, measured = [], []
    for k in range(folds):
        mine = [p for p in plan if p.fold == k]
        train = fold != k
        cut = px.cut(labels, train, mine, seed)
        held = (fold == k) | cut
        share = np.ones(C)
        share[[p.cls for p in mine if not p.own]] = 0
        npz = _fold_npz(out_dir / f"fold{k}.npz", images, labels, names, train & ~cut, held)
        _write_shares(npz, names, share)
        own = [p for p in mine if p.own]
        if unseen is not None and own and not cache_path(npz).is_file():
            unseen(own[0], cache_path(npz))
        preds = [np.asarray(probe(npz, w, k, out_dir / f"fold{k}-{'with' if w else 'without'}")) for w in (False, True)]
        t = tally(labels[held], preds[0], preds[1], C)
        others = {p: [q.cls for q in mine if q is not p] + rare for p in mine}
        measured += [(p, *px.measure(t, p, others[p]), unseen is not None, False) for p in mine]
        if own and withhold_own:  # the third probe: every class's images but the own proxies'
            share[[p.cls for p in own]] = 0
            _write_shares(npz, names, share, withheld_path(npz))
            third = np.asarray(probe(npz, str(withheld_path(npz)), k, out_dir / f"fold{k}-withheld"))
            bare = tally(labels[held], preds[0], third, C)  # an own proxy without its images: (a) once more
            paired = tally(labels[held], third, preds[1], C)  # its images alone, on the same class and images
            measured += [(replace(p, own=False), *px.measure(bare, replace(p, own=False), others[p]), False, False)
                         for p in own]
            measured += [(p, *px.measure(paired, p, others[p]), unseen is not None, True) for p in own]
        per_fold.append(px.mask(t, [p.cls for p in mine]))
        log.debug("evidence fold %d/%d: %d held out, proxies %s", k + 1, folds, int(held.sum()), mine)
    total = {key: sum(t[key] for t in per_fold) for key in per_fold[0]}
    fx = [effects(t, counted) for t in per_fold]
    return total | {"fold_held": np.stack([t["held"] for t in per_fold]), "fold_net": np.stack([f["net"] for f in fx]),
                    "fold_var": np.stack([f["var"] for f in fx]), **_proxy_arrays(measured)}


def _proxy_arrays(measured: list) -> dict[str, np.ndarray]:
    """``cross_fit``'s ``proxy_*`` arrays from (Proxy, effect, variance, held, unseen, paired) tuples: a row with
    ``proxy_paired`` is an own proxy's images alone (the probe with every class's images against the probe with all
    but its own), the others (a) for a bare row and (b) for an own one, against the probe without any image."""
    return {"proxy_fold": np.array([p.fold for p, *_ in measured], np.int64),
            "proxy_class": np.array([p.cls for p, *_ in measured], np.int64),
            "proxy_size": np.array([p.size for p, *_ in measured], np.int64),
            "proxy_own": np.array([p.own for p, *_ in measured], bool),
            "proxy_effect": np.array([m[1] for m in measured], float),
            "proxy_var": np.array([m[2] for m in measured], float),
            "proxy_held": np.array([m[3] for m in measured], np.int64),
            "proxy_unseen": np.array([m[4] and m[0].own for m in measured], bool),
            "proxy_paired": np.array([m[5] for m in measured], bool)}


def recipe_probe(recipe, device: str = "cpu", progress: bool = False, echo=None) -> Callable:
    """``cross_fit``'s probe from a "+ synthetic" classifier recipe: with the generated images, mixed as the
    recipe mixes them (every class allowed: ``sampling.share_file=all``, whatever decisions file lies beside the
    cache), but a bare proxy's (``shares_path``); without them, the same recipe on class-balanced
    re-sampling of the real images. Both take the fold as their seed, so each pair shares initialisation and draws."""
    from cbdm_aug.classify.train import train_run
    from cbdm_aug.evaluate.features import load_classifier_space

    def probe(npz: Path, with_synthetic: bool | str, fold: int, run_dir: Path) -> np.ndarray:
        smp = recipe.sampling
        shares = with_synthetic if isinstance(with_synthetic, str) else _fold_shares(npz)
        smp = (replace(smp, share_file=shares,
                       cache=str(cache_path(npz)) if cache_path(npz).is_file() else smp.cache) if with_synthetic else
               replace(smp, mode="class-balanced", cache=None, share_file=None, max_synthetic_share=None))
        r = replace(recipe, seed=fold, sampling=smp, data=replace(recipe.data, train=str(npz), test=None,
                                                                  longtail="none", holdout_per_class=0))
        if not (run_dir / "metrics.json").is_file():
            t = time.time()
            train_run(r, run_dir, progress=progress, command="cross-fitted evidence probe")
            if echo:
                which = ("with the generated images but the own proxies'" if isinstance(with_synthetic, str) else
                         "with the generated images" if with_synthetic else "without the generated images")
                echo(f"  probe {fold + 1} {which}: {time.time() - t:.0f} s")
        with np.load(npz) as z:
            held = z["x_test"]
        return load_classifier_space(run_dir, device).predict_proba(held).argmax(1).numpy()
    return probe


def judge(images: np.ndarray, labels: np.ndarray, names: list[str], synthetic_counts, recipe, out_dir: str | Path,
          min_judged: int = MIN_JUDGED, folds: int = FOLDS, device: str = "cpu", progress: bool = False,
          echo=None, unseen: Callable | None = None, planned_counts=None) -> dict[str, Decision]:
    """``decide`` on ``cross_fit`` with ``recipe_probe(recipe)``: the per-class decisions for real training images
    uint8 (N, H, W, C) and ``labels``, whose classes have ``synthetic_counts`` generated images in the recipe's
    cache. No probe is trained when no class can be judged on its own held-out images and no proxy can be cut.
    ``unseen`` and ``planned_counts`` (the cache's plan, which ``unseen_holdout`` planned the proxies from): the own
    proxies' images from a generator that never saw the images they are judged on (``cross_fit``)."""
    real_counts = np.bincount(labels, minlength=len(names))
    planned = synthetic_counts if planned_counts is None else planned_counts
    t = None
    judged = [c for c in range(len(names)) if synthetic_counts[c] and real_counts[c] >= min_judged]
    plan = px.plan(real_counts, planned, min_judged, folds, unseen=unseen is not None)  # what cross_fit will cut
    if judged or plan:
        if echo:
            third = sum(p.own for p in plan)  # folds with an own proxy train a third probe
            echo(f"judging {sum(map(bool, synthetic_counts))} classes by {folds}-fold cross-fitting: {2 * folds + third} "
                 "probe classifiers on the training images, with and without the generated images (classes under "
                 f"{min_judged} images from proxies cut to their size inside the same probes"
                 + (f"; {third} more, with every class's images but the own proxies', to judge those on the same "
                    "class" if third else "") + ")")
        t = cross_fit(images, labels, names, recipe_probe(recipe, device, progress, echo), out_dir, folds,
                      synthetic_counts=planned, min_judged=min_judged, unseen=unseen)
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


def shares_path(npz: Path) -> Path:
    """The fold's shares beside its npz (``fold0.npz``: ``fold0-shares.json``), where a bare proxy's images are
    withheld; the "with" probe's ``share_file``."""
    return npz.with_name(npz.stem + "-shares.json")


def cache_path(npz: Path) -> Path:
    """The fold's own cache beside its npz (``fold0-cache.h5``), where its own proxy's images come from the unseen
    generator; the "with" probe reads it instead of the recipe's cache when it is there."""
    return npz.with_name(npz.stem + "-cache.h5")


def withheld_path(npz: Path) -> Path:
    """The third probe's shares beside the fold's npz (``fold0-withheld.json``): the bare proxies' and the own
    proxies' images withheld, every other class's used."""
    return npz.with_name(npz.stem + "-withheld.json")


def _write_shares(npz: Path, names: list[str], share: np.ndarray, path: Path | None = None) -> None:
    import json

    from cbdm_aug.atomic import write_text_atomic

    if (share < 1).any():
        write_text_atomic(path or shares_path(npz), json.dumps({n: float(v) for n, v in zip(names, share)}, indent=1))


def _fold_shares(npz: Path) -> str:
    """The "with" probe's ``share_file``: the fold's shares file where it withholds a bare proxy's images, else every
    class's images (``mixing.ALL_IMAGES``)."""
    from cbdm_aug.mixing import ALL_IMAGES

    return str(shares_path(npz)) if shares_path(npz).is_file() else ALL_IMAGES
