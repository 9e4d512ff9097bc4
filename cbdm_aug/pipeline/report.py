"""The report of ``cbdm-aug run``: accuracy per shot group and per class for each arm, paired
differences with 95% t-intervals over the seeds (each synthetic arm against its real-only twin, and
the best synthetic arm against the best real-only arm), a verdict sentence, what the per-class gate
used and why, a labelled sample grid and the per-class accuracy plot. ``sample_grid`` is also the
demo's.

``report.json`` is read by tools; its names are fixed (issues 21, 26): ``arms``, ``twins``,
``best_real_only``, ``counts``, ``per_class`` ({arm: {class: [accuracy % per seed]}}), ``paired``
(keyed "A-B", then by group), ``worst_class`` ({arm, twin, class, n_real, mean, lo, hi}), and ``verdict``,
``best_synthetic``, ``per_seed``, ``groups``, ``gate``, ``decisions`` (the evidence stage's, per class)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbdm_aug.atomic import atomic_path, write_text_atomic
from cbdm_aug.classify.paired import excludes_zero, interval, paired
from cbdm_aug.classify.report import MAX_CLASSES_PLOTTED, binned_accuracy, size_bins
from cbdm_aug.evaluate.evidence import MIDDLE_SHARE, Decision
from cbdm_aug.mixing import MIN_REAL_SHARE, find_decisions, read_shares, refused
from cbdm_aug.pipeline.cache_stage import CacheResult
from cbdm_aug.pipeline.run import EvidenceResult
from cbdm_aug.pipeline.settings import ARM_TITLES, TWINS

GROUPS = ("many", "medium", "few", "balanced", "top1")
GROUP_LABELS = {"many": "many", "medium": "medium", "few": "few", "balanced": "balanced", "top1": "overall"}


def sample_grid(images: np.ndarray, labels: np.ndarray, cache: str | Path, class_names: list[str], path: str | Path,
                per_class: int = 8, wanted: set[str] | None = None, unused: set[str] = frozenset()) -> str:
    """One labelled row per class, for at most ``pictures.MAX_GRID_CLASSES`` classes (the rarest, the
    largest and sizes in between): ``per_class`` real training images (uint8 NHWC), a gap, then
    generated ones from ``cache``. ``wanted``: the classes that were topped up (None: all), so a class
    that needed none is not counted as "none kept"; a class in ``unused`` is labelled "not used" (the
    evidence gave it none). Returns the line that says which classes it shows."""
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.data.convert import convert_images
    from cbdm_aug.pictures import classes_to_show, labelled_rows, selection_note

    counts = np.bincount(labels, minlength=len(class_names))
    shown = classes_to_show(counts)
    with SyntheticCache(cache) as syn:
        syn_labels = syn.labels
        size, _, c = syn.image_shape
        fakes = {k: [syn[int(i)][0] for i in np.flatnonzero(syn_labels == k)[:per_class]] for k in shown}
    rows = []
    for k in shown:
        real = convert_images(images[np.flatnonzero(labels == k)[:per_class]], size, c)
        blank = np.full((per_class - len(real), size, size, c), 255, np.uint8)
        fake = np.stack(fakes[k]) if fakes[k] else np.zeros((0, size, size, c), np.uint8)
        tag = " not used" if class_names[k] in unused else ""
        rows.append((f"{class_names[k]} ({counts[k]}){tag}", np.concatenate([real, blank, fake])))
    note = selection_note(len(shown), len(class_names))
    asked = [k for k in shown if wanted is None or class_names[k] in wanted]
    empty = [class_names[k] for k in asked if not fakes[k]]
    generated = "generated, after the filter" + (
        ": none kept for any class shown (the report's filter table says why)" if asked and len(empty) == len(asked) else
        f": none kept for {len(empty)} of the {len(asked)} topped-up classes shown" if empty else "")
    labelled_rows(rows, path, header=note if len(shown) < len(class_names) else "", per_row=2 * per_class,
                  columns=[(0, "real"), (per_class, generated)])
    return note


def _per_seed(arm: dict, key: str) -> list[float]:
    return [100 * arm["per_seed"][str(s)][key] for s in arm["seeds"]]


def _groups_of(arms: dict) -> dict:
    first = next(iter(arms.values()))
    return first["per_seed"][str(first["seeds"][0])]["groups"]


def _says(s: dict, rival: str) -> str:
    if s["lo"] > 0:
        return f"beat {rival} ({interval(s)} points)"
    if s["hi"] < 0:
        return f"lost to {rival} ({interval(s)} points)"
    return f"did not beat {rival} ({interval(s)} points, the interval includes 0)"


def verdict(stats: dict, twins: dict, best: str, best_syn: str, groups: dict, class_names: list[str],
            n_seeds: int) -> str:
    """Plain sentences on the rarest group there is: each synthetic arm against its real-only twin,
    then the best synthetic arm against the best real-only arm where that is another pair."""
    key = next((g for g in ("few", "medium") if groups.get(g)), "balanced")
    if key == "balanced":
        where = "On all your classes (balanced accuracy)"
    else:
        ids = groups[key]
        names = ", ".join(class_names[i] for i in ids[:6]) + (", ..." if len(ids) > 6 else "")
        where = f"On your {len(ids)} {key}-shot class{'es' if len(ids) > 1 else ''} ({names})"
    c = stats["control+synthetic-control"][key]
    r = stats["randaugment+synthetic-randaugment"][key]
    if n_seeds < 2:
        return (f"{where}, control + synthetic against the control: {c['mean']:+.1f} points, RandAugment + synthetic "
                f"against RandAugment: {r['mean']:+.1f} points, with one seed, which gives no interval; rerun with "
                "--seeds 0,1,2 for an answer.")
    text = (f"{where}, control + synthetic {_says(c, 'the control')}, and RandAugment + synthetic "
            f"{_says(r, 'RandAugment')}; {n_seeds} seeds, paired 95% t-intervals.")
    if twins[best_syn] != best:
        b = stats[f"{best_syn}-{best}"][key]
        text += f" The best arm with generated images, {ARM_TITLES[best_syn]}, {_says(b, f'the best real-only arm, {ARM_TITLES[best]}')}."
    return text


RAREST_SHOWN = 10  # past MAX_CLASSES_PLOTTED classes the report lists this many rarest ones


def worst_class(per_class_acc: dict, arm: str, twin: str, counts: dict) -> dict | None:
    """The class ``arm`` hurts most against ``twin``: the lowest mean of the per-seed paired differences of
    its accuracy (points). {arm, twin, class, n_real, mean, lo, hi} (lo/hi None with one seed); None when no
    class has a test image."""
    best = None
    for name, a in per_class_acc[arm].items():
        b = per_class_acc[twin][name]
        if any(v is None for v in a + b):
            continue
        d = paired(a, b)
        if best is None or d["mean"] < best["mean"]:
            finite = np.isfinite(d["lo"])
            best = {"arm": arm, "twin": twin, "class": name, "n_real": int(counts[name]), "mean": d["mean"],
                    "lo": d["lo"] if finite else None, "hi": d["hi"] if finite else None, "n": d["n"]}
    return best


def worst_line(w: dict | None) -> str:
    """'Worst class: R (3 images) -11.0 [-32.2, +10.2] points with RandAugment + synthetic against RandAugment.'"""
    if w is None:
        return ""
    stat = {"mean": w["mean"], "lo": w["lo"] if w["lo"] is not None else float("nan"),
            "hi": w["hi"] if w["hi"] is not None else float("nan"), "n": w["n"]}
    return (f"Worst class: {w['class']} ({w['n_real']} real image{'s' * (w['n_real'] != 1)}) {interval(stat)} points "
            f"with {ARM_TITLES[w['arm']]} against {ARM_TITLES[w['twin']]}.")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _table(headers, rows) -> str:
    from cbdm_aug.classify.report import md_table

    return md_table(headers, rows)


def _gate_cells(name: str, cached: CacheResult, e: Decision | None) -> tuple[str, str, str]:
    """(generated, near-copies, used) for a class, from the cache stage's record and its decision."""
    kept = cached.kept.get(name, 0)
    used = (str(kept) if e is None or not kept or e.share >= 1 else
            f"{kept} (at most {100 * e.share:.0f}% of its places)" if e.used else f"none ({DECIDED_BY[e.source]})")
    if cached.gate is None:  # an unfiltered cache: everything generated is used
        return str(cached.made.get(name, kept)), "", used
    g = cached.gate[name]
    return (str(g["generated"]), f"{100 * g['copy_share']:.0f}%" if g["generated"] else "",
            used if g["used"] else "none (gated)")


DECIDED_BY = {"own": "its held-out images", "proxy": "proxies of its size", "rule": "the rule"}


def _decision_cells(e: Decision | None) -> list[str]:
    """(decision, net points [95% interval], decided by) of a class; blank without the evidence stage."""
    if e is None or not e.synthetic:  # nothing to decide
        return ["", "", ""]
    estimate = "" if e.estimate is None else f"{e.estimate:+.1f}" + (
        f" [{e.lo:+.1f}, {e.hi:+.1f}]" if e.lo is not None else "")
    return ["none" if not e.used else "used" if e.share >= 1 else "reduced", estimate, DECIDED_BY[e.source]]


def _decision_lines(decided: list[str], evidence: EvidenceResult, s) -> list[str]:
    """The per-class decisions of the evidence stage, one line a class that had generated images."""
    floor = ("" if s.min_real_share is None else
             f" A class that uses them still gives at least {100 * s.min_real_share:.0f}% of its places in an epoch "
             "to its real images.")
    head = (f"Which classes got generated images, and why: {evidence.folds}-fold cross-fitting on the training "
            f"images (a probe, the {ARM_TITLES[evidence.probe]} recipe, trained with and without them, judged on "
            f"held-out real images; the net in points of the class's recall and the other classes', with a 95% "
            f"interval: the held-out images' churn between the two probes, scaled by the probes' noise pooled over every "
            f"class and fold). A class "
            f"gets its images when the interval is above 0, none when it is below 0, and otherwise the middle rule "
            f"(at most {100 * MIDDLE_SHARE:.0f}% of its places). A class under {evidence.min_judged} real images is "
            "decided from proxies: larger classes cut to its size (or the nearest size cut) inside the same probes, "
            "judged on every image cut, their own images' effect measured on the same proxy with and without them "
            "(a third probe, every other class's images in both), "
            + ("with their own images from a generator fitted without the images they are judged on (then the run's "
               "generator went on from it on every image: docs/evaluate.md, the leak)" if evidence.unseen else
               "with their own images from the run's generator, which saw them, so their gain is an upper bound "
               "(docs/evaluate.md, the leak)") + "; where the proxies show a class that small losing to the others' images, the "
            "classes that took a rare class's held-out images are bounded to the middle share. A class's net counts "
            f"what it takes from the classes of {evidence.min_judged} images or more; what the others take from a "
            "rarer class is the proxies' to measure." + floor)
    shown = decided[:MAX_DECISIONS_SHOWN]
    more = len(decided) - len(shown)
    return [head, "", *(f"- {w}" for w in shown), *([f"- ... and {more} more (per_class.csv)"] if more > 0 else []), ""]


MAX_DECISIONS_SHOWN = 24


SNIPPET_ARM = "randaugment+synthetic"  # the arm whose mixing the snippet builds (both + synthetic arms share it)


@dataclass(frozen=True)
class ArmMixing:
    """What the report's snippet builds: the + synthetic arms' ``BalancedSyntheticSampler`` keywords
    (``classify.train.sampler_settings``) and their decisions (``RealSyntheticDataset(decisions=)``: "auto", the
    file beside the cache; None, every image; or a path)."""
    sampler: dict
    decisions: str | None = "auto"
    real_only_policy: bool = False  # the arm RandAugmented its real images only (ArmSettings.randaugment_synthetic)

    @classmethod
    def of_run(cls, out: Path, seed: int, n_real: int) -> ArmMixing:
        """From the recipe the arm trained seed ``seed`` with, on the run's ``n_real`` real training images."""
        from cbdm_aug.classify.recipe import load_recipe
        from cbdm_aug.classify.train import decisions_of, sampler_settings

        recipe = load_recipe(out / "arms" / SNIPPET_ARM / f"seed{seed}" / "recipe.yaml")
        decisions = decisions_of(recipe.sampling)
        beside = [find_decisions(c) for c in recipe.sampling.cache_paths()]
        if decisions not in (None, "auto") and all(b is not None and b.resolve() == Path(decisions).resolve()
                                                   for b in beside):
            decisions = "auto"  # the file beside the cache: what the dataset finds by itself
        return cls(sampler_settings(recipe, n_real), decisions,
                   recipe.data.augment == "randaugment" and not recipe.data.augment_synthetic)

    def code(self, cache: Path, resize: bool) -> list[str]:
        """The snippet's three lines: the dataset, the sampler, the loader."""
        extra = ", resize=True" * resize + ("" if self.decisions == "auto" else f", decisions={self.decisions!r}")
        kw = {k: v for k, v in self.sampler.items()
              if not (k == "target" and v == "uniform") and not (k == "max_synthetic_share" and v is None)}
        return [f"ds = RealSyntheticDataset(real_train_set, {str(cache)!r}, transform=train_tf{extra})",
                f"sampler = BalancedSyntheticSampler(ds, {', '.join(f'{k}={v!r}' for k, v in kw.items())})",
                "loader = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=4)"]

    def prose(self, cache: Path, counts: dict[str, int]) -> str:
        """What the snippet mixes, in words: the arm's decisions and epoch (``counts``: the cache's images a class)."""
        path = find_decisions(cache) if self.decisions == "auto" else self.decisions
        if path is None:
            said = "no per-class decisions (every class uses its generated images)"
        else:
            out = [n for n in refused(read_shares(path)) if counts.get(n)]
            what = (f"{', '.join(out)}: none of {'its' if len(out) == 1 else 'their'} generated images; "
                    "`decisions=None` would give every class all of its own" if out else
                    "every class uses its generated images")
            said = (f"the run's per-class decisions (`{path}`"
                    + (", which the dataset finds beside the cache" if self.decisions == "auto" else "") + f": {what})")
        floor = self.sampler["min_real_share"]
        return (f"This is the mixing the + synthetic arms trained with: the same cache, {said}, "
                f"{self.sampler['num_samples']} draws an epoch (the real-only arms' epoch)"
                + (f", at least {100 * floor:.0f}% of each class's places for its real images" if floor else "")
                + f" and seed {self.sampler['seed']}, the arms' first.")


def next_steps(out: Path, cache: Path, data: dict, mixing: ArmMixing) -> list[str]:
    """The report's last section: the two ways to use the filtered, gated images in ``cache``, filled in
    for this run so that each runs as printed: the plugin snippet, which builds the + synthetic arms' own
    ``mixing`` (``resize=True`` where the run trained smaller than the user's images), and the ``export``
    command for another trainer (timm's train.py)."""
    import shlex

    from cbdm_aug.cache.reader import SyntheticCache

    with SyntheticCache(cache) as syn:
        (h, w, _), n, counts = syn.image_shape, len(syn), dict(zip(syn.class_names, syn.counts().tolist()))
    size, q = int(data["image_size"]), lambda p: shlex.quote(str(p))
    resize = (h, w) != (size, size)
    sizes = (f"The {n} generated images are {h}x{w} (the size the run trained at) and your images are "
             f"{size}x{size}, so `resize=True` scales the generated ones to your size before `train_tf`."
             if resize else f"The {n} generated images are {h}x{w}, the size of your images.")
    root, cap = out / "export", max(data["counts"])
    plugin = ("In a PyTorch training loop, with your real training set as a map-style dataset `real_train_set` "
              "(for example a torchvision `ImageFolder`) and your transform `train_tf`:")
    other = ("With another trainer (timm's `train.py`, an `ImageFolder` script, Lightning, Hugging Face): write "
             f"the generated images and the run's real training split as class folders, each class capped at {cap} "
             "images (the largest class's real count; real images first), so a trainer without a balanced sampler "
             "sees every class about equally often:")
    floor = mixing.sampler["min_real_share"] or 0.0
    export = (f"cbdm-aug export {q(cache)} --out {q(root / 'train')} --real {q(out / 'data' / 'train.npz')} "
              f"--per-class {cap}" + (f" --min-real-share {floor:g}" if floor != MIN_REAL_SHARE else ""))
    train = (f"python train.py --data-dir {q(root)} --model resnet18 --num-classes {len(data['class_names'])} "
             f"--img-size {size}")
    after = (f"Put your validation images in `{root / 'validation'}/<class>/` (train.py looks for `train` and "
             "`validation` under `--data-dir`). `manifest.csv` there lists every image with its provenance; its "
             "`kind` column tells generated from real. The export honours this run's decisions (a refused class gets "
             f"no generated image) and the arms' real floor (at least {floor:.0%} of each class's places are real images, "
             "repeated where a class has fewer); it is one fixed draw, not the sampler's fresh mix each epoch "
             "(docs/export.md).")
    return ["## Next: use the images in your own training", "",
            f"The filtered, gated images are in `{cache}` (HDF5, with their provenance). {sizes}", "", plugin, "",
            "```python", "from torch.utils.data import DataLoader", "",
            "from cbdm_aug import BalancedSyntheticSampler, RealSyntheticDataset", "", *mixing.code(cache, resize),
            "```", "", mixing.prose(cache, counts), "",
            *(["The run's RandAugment + synthetic arm RandAugmented the real images only: to do the same, put "
               "RandAugment in `real_train_set`'s own transform (it runs first, on the real images only) and keep it "
               "out of `train_tf`.", ""] if mixing.real_only_policy else []),
            ("Call `loader.sampler.set_epoch(epoch)` at the start of every epoch (the README: 'Plugging into "
             "your training loop')."), "", other, "", "```bash", export, train, "```", "", after]


@dataclass
class _Numbers:
    """What the report says, computed once from the arms' per-seed metrics."""
    values: dict          # {arm: {group: [accuracy % per seed]}}
    groups: dict          # {group: [class ids]}
    best: str             # the best real-only arm on the rarest group there is
    best_syn: str         # the best + synthetic arm there
    pairs: dict           # {"A-B": (A, B)}
    stats: dict           # {"A-B": {group: paired()}}
    per_class: dict       # {arm: {class name: [accuracy % per seed]}}
    worst: dict | None    # worst_class of best_syn against its twin
    sentence: str         # the verdict


def _numbers(data: dict, cached: CacheResult, arms: dict, opts) -> _Numbers:
    names = data["class_names"]
    groups = _groups_of(arms)
    values = {a: {g: _per_seed(arms[a], g) for g in GROUPS if arms[a]["per_seed"][str(arms[a]["seeds"][0])][g] is not None}
              for a in arms}
    key = next((g for g in ("few", "medium") if groups.get(g)), "balanced")
    best = max(("control", "randaugment"), key=lambda a: np.mean(values[a][key]))
    best_syn = max(TWINS, key=lambda a: np.mean(values[a][key]))
    pairs = {"randaugment-control": ("randaugment", "control"),
             **{f"{a}-{b}": (a, b) for a, b in TWINS.items()},
             f"{best_syn}-{best}": (best_syn, best)}  # the best pair may be a twin pair: then it is one key
    stats = {p: {g: paired(values[a][g], values[b][g]) for g in values[a] if g in values[b]} for p, (a, b) in pairs.items()}
    sentence = verdict(stats, TWINS, best, best_syn, groups, names, len(opts.seeds))
    if not sum(cached.kept.values()):  # then each + synthetic arm is its twin: say so, not "+0.0 points"
        sentence = ("The filter and the gate kept none of the generated images, so each + synthetic arm trained on "
                    "your real images alone (its numbers are its twin's); the generator had not learned your classes "
                    "well enough for its images to pass: fit it longer (--gen-steps) or look at samples.png. "
                    + sentence)
    elif cached.filter_note:  # most images filtered away: the + synthetic arms are near their twins, say why
        sentence = cached.filter_note[0].upper() + cached.filter_note[1:] + ". " + sentence
    per_class = {a: {name: [100 * v if v is not None else None
                            for v in (arms[a]["per_seed"][str(s)]["per_class"][c] for s in arms[a]["seeds"])]
                     for c, name in enumerate(names)} for a in arms}
    worst = worst_class(per_class, best_syn, TWINS[best_syn], dict(zip(names, data["counts"])))
    sentence = " ".join(x for x in (sentence, worst_line(worst)) if x)
    return _Numbers(values, groups, best, best_syn, pairs, stats, per_class, worst, sentence)


def _arm_tables(nums: _Numbers, arms: dict, n: int) -> tuple[str, str, list[str]]:
    """(accuracy table, paired-differences table, the groups shown)."""
    values, stats = nums.values, nums.stats
    shown = [g for g in GROUPS if g in values["control"]]
    arm_rows = [[ARM_TITLES[a]] + [f"{np.mean(values[a][g]):.2f} ± {np.std(values[a][g], ddof=1):.2f}" if n > 1
                                   else f"{np.mean(values[a][g]):.2f} (1 seed)" for g in shown] for a in arms]

    def label(p, a, b):
        tags = [t for t, on in (("twin", TWINS.get(a) == b), ("best vs best real-only", p == f"{nums.best_syn}-{nums.best}"))
                if on]
        return f"{ARM_TITLES[a]} - {ARM_TITLES[b]}" + (f" ({', '.join(tags)})" if tags else "")

    pair_rows = [[label(p, a, b)] + [interval(stats[p][g]) + (" *" if excludes_zero(stats[p][g]) else "") for g in shown]
                 for p, (a, b) in nums.pairs.items()]
    return (_table(["arm"] + [GROUP_LABELS[g] for g in shown], arm_rows),
            _table(["paired difference (points)"] + [GROUP_LABELS[g] for g in shown], pair_rows), shown)


def _per_class_section(out: Path, data: dict, cached: CacheResult, evidence: EvidenceResult | None, nums: _Numbers,
                       arms: dict) -> str:
    """The per-class table (binned past MAX_CLASSES_PLOTTED classes); writes per_class.csv with every class."""
    names, acc = data["class_names"], nums.per_class
    decisions = evidence.decisions if evidence else {}
    rows = []
    for c, name in enumerate(names):
        group = next(g for g, ids in nums.groups.items() if c in ids)
        e = decisions.get(name)
        rows.append([name, str(data["counts"][c]), *_gate_cells(name, cached, e), *_decision_cells(e),
                     str(data["test_counts"][c]), group]
                    + [f"{np.nanmean([np.nan if v is None else v for v in acc[a][name]]):.1f}" for a in arms])
    header = (["class", "real train", "generated", "near-copies", "synthetic used", "decision", "net points [95%]",
               "decided by", "test", "group"] + [ARM_TITLES[a] for a in arms])
    _write_csv(out / "per_class.csv", header + ["why"],
               [row + [decisions[row[0]].why if row[0] in decisions else ""] for row in rows])
    if len(names) <= MAX_CLASSES_PLOTTED:
        return _table(header, rows)
    # a table a reader can take in: the size bins, then the rarest classes; every class is in the CSV
    bins = size_bins(data["counts"])
    binned = {a: binned_accuracy(data["counts"], [np.nanmean([np.nan if v is None else v / 100 for v in acc[a][name]])
                                                  for name in names], bins) for a in arms}
    bin_rows = [[f"{lo}" if lo == hi else f"{lo}-{hi}", str(binned["control"][k]["classes"])]
                + [f"{binned[a][k]['mean']:.1f} ± {binned[a][k]['ci95']:.1f}" if binned[a][k]["classes"] > 1
                   else f"{binned[a][k]['mean']:.1f}" for a in arms] for k, (lo, hi) in enumerate(bins)]
    rare = np.argsort(data["counts"], kind="stable")[:RAREST_SHOWN]
    return "\n".join([
        "By class size (mean accuracy of a bin's classes ± the 95% interval over them):", "",
        _table(["real train images", "classes"] + [ARM_TITLES[a] for a in arms], bin_rows), "",
        f"The {len(rare)} rarest of {len(names)} classes (every class: per_class.csv):", "",
        _table(header, [rows[c] for c in rare])])


def _pictures(out: Path, data: dict, cached: CacheResult, evidence: EvidenceResult | None, arms: dict) -> str:
    """per_class_accuracy.png and samples.png; returns the line that says which classes the grid shows."""
    from cbdm_aug.classify.report import compare_plot, load_run
    from cbdm_aug.data import open_data

    runs = [load_run(out / "arms" / a) for a in arms]
    for run, a in zip(runs, arms):
        run["name"] = ARM_TITLES[a]
    compare_plot(runs, out / "per_class_accuracy.png")
    train = open_data(str(out / "data" / "train.npz"), split="train")
    wanted = {n for n, g in cached.made.items() if g}
    unused = {n for n, e in (evidence.decisions if evidence else {}).items() if e.synthetic and not e.used}
    return sample_grid(train.images, train.labels, out / cached.cache, data["class_names"], out / "samples.png",
                       wanted=wanted, unused=unused)


def _class_notes(cached: CacheResult, evidence: EvidenceResult | None, opts) -> tuple[list[str], list[str]]:
    """(the gated classes' reasons, then the per-class text: the gate's lines and the evidence's decisions)."""
    gated = [g["why"] for g in (cached.gate or {}).values() if not g["used"]]
    decided = [e.why for e in (evidence.decisions if evidence else {}).values() if e.synthetic]
    lines = [*([*(f"- {w}" for w in gated[:RAREST_SHOWN]),
                *([f"- ... and {len(gated) - RAREST_SHOWN} more classes gated off (per_class.csv)"]
                  if len(gated) > RAREST_SHOWN else []), ""] if gated else []),
             *(_decision_lines(decided, evidence, opts.arm) if evidence else [])]
    return gated, lines


def _markdown(out: Path, data: dict, cached: CacheResult, evidence: EvidenceResult | None, nums: _Numbers, tables: tuple,
              opts, r,
              why: list[str], times: dict, seconds: float, thresholds: str) -> list[str]:
    arm_table, pair_table, per_class, class_notes, shown_note = tables
    names, n, s = data["class_names"], len(opts.seeds), opts.arm
    gate = (f" (a class at {100 * opts.cache.max_copy_share:.0f}% near-copies or more gets none)"
            if opts.cache.max_copy_share is not None else " (off)")
    return [
        "# cbdm-aug run", "",
        f"Data: {data['source']}, {sum(data['counts'])} training images in {len(names)} classes; "
        f"{data['test_how']} ({sum(data['test_counts'])} images).", "",
        "## Verdict", "", nums.sentence, "",
        f"## Accuracy (%) per arm over seeds {list(opts.seeds)}", "",
        "Arms: the control trains on the real images with class-balanced re-sampling; RandAugment adds a RandAugment "
        "policy to it (the strongest real-only recipe we know); each '+ synthetic' arm is its real-only twin plus the "
        f"filtered, gated generated images (synthetic loss weight {s.synthetic_weight:g}; RandAugment, where the twin "
        f"has it, on {'real and generated images alike' if s.randaugment_synthetic else 'the real images only'}). "
        f"Groups: {thresholds}.", "", arm_table, "",
        "## Paired differences (accuracy points)", "",
        f"Per seed, arm minus arm (same seed: same initialisation and real-image draws), mean and 95% t-interval over "
        f"{n} seeds; * marks an interval that excludes 0. The best real-only arm here is {ARM_TITLES[nums.best]}, the "
        f"best arm with generated images {ARM_TITLES[nums.best_syn]}.", "", pair_table, "",
        "## Per class (accuracy %, mean over seeds)", "",
        "'generated' counts the class's samples before the filter, 'near-copies' the share of them that are "
        "near-copies of its training images, 'synthetic used' what the classifier saw after the filter and the "
        "per-class gate" + gate + (", and the evidence (the list below): 'decision', the net effect of its generated "
                                   "images on the probes' recall with its interval, and what decided it (its own "
                                   "held-out images, proxies of its size, or the rule)" if evidence else "") + ".", "", per_class, "",
        *class_notes,
        "![per-class accuracy](per_class_accuracy.png)", "",
        f"Per class ({shown_note}; the count of real training images beside the name), real training images "
        "(left) and generated, filtered ones (right):", "", "![samples](samples.png)", "",
        "## Settings", "", *(f"- {w}" for w in why), "", "```json",
        json.dumps({"options": {k: v for k, v in vars(opts).items() if k not in ("fit", "cache", "arm")},
                    "generator": vars(opts.fit), "cache": vars(opts.cache), "arm": vars(opts.arm),
                    "resolved": vars(r)}, indent=1, default=str), "```", "",
        "## Time (seconds; a stage marked reused was made by an earlier call, in the time shown)", "",
        *(f"- {k}: {v:.0f} ({v / 60:.1f} min)" for k, v in times.items()),
        *(["- the cache stage's steps: " + ", ".join(f"{k} {v:.1f} min" for k, v in cached.minutes.items())]
          if cached.minutes else []),
        f"- this call in all: {seconds:.0f} ({seconds / 60:.1f} min)", f"- {wait_policy_line()}", "",
        *next_steps(out, out / cached.cache, data, ArmMixing.of_run(out, opts.seeds[0], sum(data["counts"])))]


def wait_policy_line(environ=None) -> str:
    """How this process's OpenMP threads waited, which moves a CPU run's minutes (``cbdm_aug.cli.omp_wait_policy``)."""
    import os

    env = os.environ if environ is None else environ
    if env.get("GOMP_SPINCOUNT") is not None:
        return f"OpenMP threads: GOMP_SPINCOUNT={env['GOMP_SPINCOUNT']} (set by you)"
    if (env.get("OMP_WAIT_POLICY") or "").upper() == "PASSIVE":
        return ("OpenMP threads: sleep while they wait (OMP_WAIT_POLICY=PASSIVE: set by you, or by the command "
                "line where the machine was busy when it started): on an idle machine a CPU step is 1.2-1.3x slower than spinning")
    if env.get("OMP_WAIT_POLICY"):
        return f"OpenMP threads: OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}"
    return "OpenMP threads: libgomp's default short spin while they wait (the machine was idle when the command started)"


def write_report(out: Path, data: dict, cached: CacheResult, arms: dict, opts, r, why: list[str], times: dict,
                 seconds: float, evidence: EvidenceResult | None = None) -> dict:
    """Write report.md, report.json, per_class.csv, samples.png and per_class_accuracy.png; returns the
    numbers and the terminal text."""
    nums = _numbers(data, cached, arms, opts)
    arm_table, pair_table, _ = _arm_tables(nums, arms, len(opts.seeds))
    per_class = _per_class_section(out, data, cached, evidence, nums, arms)
    gated, class_notes = _class_notes(cached, evidence, opts)
    shown_note = _pictures(out, data, cached, evidence, arms)
    thresholds = (f"many > {opts.many_threshold}, medium {opts.few_threshold}..{opts.many_threshold}, "
                  f"few < {opts.few_threshold} real training images")
    terminal = "\n".join([
        f"\nAccuracy (%) on {data['test_source']}, mean ± sample std over seeds {list(opts.seeds)}; groups: {thresholds}.",
        arm_table, "", "Paired differences, same seeds, mean [95% t-interval] (* excludes 0):", pair_table, "",
        *(f"gate: {w}" for w in gated), *([""] if gated else []), nums.sentence])
    lines = _markdown(out, data, cached, evidence, nums, (arm_table, pair_table, per_class, class_notes, shown_note),
                      opts, r, why, times, seconds, thresholds)
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    names = data["class_names"]
    record = {"verdict": nums.sentence, "arms": list(arms), "twins": dict(TWINS), "best_real_only": nums.best,
              "best_synthetic": nums.best_syn, "counts": dict(zip(names, data["counts"])), "per_class": nums.per_class,
              "paired": nums.stats, "per_seed": nums.values, "groups": nums.groups, "gate": cached.gate,
              "worst_class": nums.worst,
              "decisions": {n: e.to_json() for n, e in evidence.decisions.items()} if evidence else None}
    write_text_atomic(out / "report.json", json.dumps(record, indent=1))
    return record | {"terminal": terminal}
