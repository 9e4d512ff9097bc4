"""The report of ``cbdm-aug run``: accuracy per shot group and per class for each arm, paired
differences with 95% t-intervals over the seeds, a verdict sentence, a labelled sample grid and the
per-class accuracy plot. ``sample_grid`` is also the demo's."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cbdm_aug.classify.paired import excludes_zero, interval, paired

GROUPS = ("many", "medium", "few", "balanced", "top1")
GROUP_LABELS = {"many": "many", "medium": "medium", "few": "few", "balanced": "balanced", "top1": "overall"}
TITLES = {"control": "control", "randaugment": "RandAugment", "synthetic": "+ synthetic"}


def sample_grid(images: np.ndarray, labels: np.ndarray, cache: str | Path, class_names: list[str], path: str | Path,
                per_class: int = 8) -> None:
    """One row per class, labelled with its name: ``per_class`` real training images (uint8 NHWC),
    a gap, then generated ones from ``cache``; a header says "real | generated"."""
    from PIL import Image, ImageDraw

    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.data.convert import convert_images

    with SyntheticCache(cache) as syn:
        syn_labels = syn.labels
        size, _, c = syn.image_shape
        fakes = [[syn[int(i)][0] for i in np.flatnonzero(syn_labels == k)[:per_class]] for k in range(len(class_names))]
    real = convert_images(images, size, c)
    scale = max(1, 32 // size)
    tile = size * scale + 2
    label_w, head_h = 8 + 7 * max(len(n) for n in class_names), 16
    grid = Image.new("RGB", (label_w + tile * (2 * per_class + 1), head_h + tile * len(class_names)), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((label_w, 2), "real", fill="black")
    draw.text((label_w + tile * (per_class + 1), 2), "generated", fill="black")

    def paste(x, col, row):
        im = Image.fromarray(x[..., 0] if c == 1 else x).convert("RGB")
        grid.paste(im.resize((size * scale, size * scale), Image.NEAREST), (label_w + col * tile + 1, head_h + row * tile + 1))

    for k, name in enumerate(class_names):
        draw.text((4, head_h + k * tile + tile // 2 - 6), name, fill="black")
        for j, i in enumerate(np.flatnonzero(labels == k)[:per_class]):
            paste(real[i], j, k)
        for j, x in enumerate(fakes[k]):
            paste(x, per_class + 1 + j, k)
    tmp = Path(path).with_name(f".{Path(path).stem}.tmp{os.getpid()}.png")
    grid.save(tmp)
    os.replace(tmp, path)


def _per_seed(arm: dict, key: str) -> list[float]:
    return [100 * arm["per_seed"][str(s)][key] for s in arm["seeds"]]


def _groups_of(arms: dict) -> dict:
    first = next(iter(arms.values()))
    return first["per_seed"][str(first["seeds"][0])]["groups"]


def verdict(stats: dict, best: str, groups: dict, class_names: list[str], n_seeds: int) -> str:
    """One plain sentence on + synthetic against the best real-only arm, on the rarest group there is."""
    key = next((g for g in ("few", "medium") if groups.get(g)), "balanced")
    s = stats["synthetic-best"][key]
    if key == "balanced":
        where = "on all your classes (balanced accuracy)"
    else:
        ids = groups[key]
        names = ", ".join(class_names[i] for i in ids[:6]) + (", ..." if len(ids) > 6 else "")
        where = f"on your {len(ids)} {key}-shot class{'es' if len(ids) > 1 else ''} ({names})"
    rival = TITLES[best]
    if n_seeds < 2:
        return (f"{where[0].upper()}{where[1:]}, + synthetic vs {rival}: {s['mean']:+.1f} points with one seed, which "
                "gives no interval; rerun with --seeds 0,1,2 for an answer")
    text = f"{where[0].upper()}{where[1:]}, "
    if s["lo"] > 0:
        return text + f"+ synthetic beat {rival} by {interval(s)} points (95% t-interval over {n_seeds} seeds)."
    if s["hi"] < 0:
        return text + f"+ synthetic lost to {rival} by {interval(s)} points (95% t-interval over {n_seeds} seeds)."
    return text + (f"+ synthetic did not beat {rival}: {interval(s)} points, the interval includes 0 "
                   f"({n_seeds} seeds).")


def _table(headers, rows) -> str:
    from cbdm_aug.classify.report import _md_table

    return _md_table(headers, rows)


def write_report(out: Path, data: dict, syn: dict, arms: dict, opts, r, why: list[str], times: dict,
                 seconds: float) -> dict:
    """Write report.md, report.json, samples.png and per_class_accuracy.png; returns the numbers and
    the terminal text."""
    from cbdm_aug.classify.report import compare_plot, load_run

    names = data["class_names"]
    groups = _groups_of(arms)
    n = len(opts.seeds)
    values = {a: {g: _per_seed(arms[a], g) for g in GROUPS if arms[a]["per_seed"][str(arms[a]["seeds"][0])][g] is not None}
              for a in arms}
    key = next((g for g in ("few", "medium") if groups.get(g)), "balanced")
    best = max(("control", "randaugment"), key=lambda a: np.mean(values[a][key]))
    pairs = {"randaugment-control": ("randaugment", "control"), "synthetic-control": ("synthetic", "control"),
             "synthetic-best": ("synthetic", best)}  # the best real-only arm may be the control itself
    stats = {p: {g: paired(values[a][g], values[b][g]) for g in values[a] if g in values[b]} for p, (a, b) in pairs.items()}
    sentence = verdict(stats, best, groups, names, n)

    shown = [g for g in GROUPS if g in values["control"]]
    arm_rows = [[TITLES[a]] + [f"{np.mean(values[a][g]):.2f} ± {np.std(values[a][g], ddof=1) if n > 1 else 0:.2f}"
                               for g in shown] for a in arms]
    arm_table = _table(["arm"] + [GROUP_LABELS[g] for g in shown], arm_rows)
    pair_rows = [[f"{TITLES[a]} - {TITLES[b]}" + (" (best real-only)" if p == "synthetic-best" else "")] + [interval(stats[p][g]) + (" *" if excludes_zero(stats[p][g]) else "")
                                                   for g in shown] for p, (a, b) in pairs.items()]
    pair_table = _table(["paired difference (points)"] + [GROUP_LABELS[g] for g in shown], pair_rows)
    kept = syn.get("kept", {})
    per_class_rows = []
    for c, name in enumerate(names):
        group = next(g for g, ids in groups.items() if c in ids)
        per_class_rows.append([name, str(data["counts"][c]), str(kept.get(name, 0)), str(data["test_counts"][c]), group]
                              + [f"{100 * np.nanmean([np.nan if v is None else v for v in (arms[a]['per_seed'][str(s)]['per_class'][c] for s in arms[a]['seeds'])]):.1f}"
                                 for a in arms])
    per_class = _table(["class", "real train", "synthetic", "test", "group"] + [TITLES[a] for a in arms], per_class_rows)
    thresholds = f"many > {opts.many_threshold}, medium {opts.few_threshold}..{opts.many_threshold}, few < {opts.few_threshold} real training images"

    runs = [load_run(out / "arms" / a) for a in arms]
    for run, a in zip(runs, arms):
        run["name"] = TITLES[a]
    compare_plot(runs, out / "per_class_accuracy.png")
    from cbdm_aug.data import open_data

    train = open_data(str(out / "data" / "train.npz"), split="train")
    sample_grid(train.images, train.labels, out / syn["cache"], names, out / "samples.png")

    terminal = "\n".join([
        f"\nAccuracy (%) on {data['test_source']}, mean ± sample std over seeds {list(opts.seeds)}; groups: {thresholds}.",
        arm_table, "", f"Paired differences, same seeds, mean [95% t-interval] (* excludes 0):", pair_table, "",
        sentence])
    lines = [
        "# cbdm-aug run", "",
        f"Data: {data['source']}, {sum(data['counts'])} training images in {len(names)} classes; "
        f"{data['test_how']} ({sum(data['test_counts'])} images).", "",
        "## Verdict", "", sentence, "",
        f"## Accuracy (%) per arm over seeds {list(opts.seeds)}", "",
        "Arms: the control trains on the real images with class-balanced re-sampling; RandAugment adds a RandAugment "
        "policy to it (the strongest real-only recipe); + synthetic adds the filtered generated images to the control "
        f"(synthetic loss weight {opts.synthetic.synthetic_weight:g}"
        + (", RandAugment on its real and generated images" if opts.synthetic.randaugment else "") + "). "
        f"Groups: {thresholds}.", "", arm_table, "",
        "## Paired differences (accuracy points)", "",
        f"Per seed, arm minus arm (same seed: same initialisation and real-image draws), mean and 95% t-interval over "
        f"{n} seeds; * marks an interval that excludes 0. The best real-only arm here is {TITLES[best]}.", "", pair_table, "",
        "## Per class (accuracy %, mean over seeds)", "", per_class, "",
        "![per-class accuracy](per_class_accuracy.png)", "",
        "Per class, real training images (left) and generated, filtered ones (right):", "", "![samples](samples.png)", "",
        "## Settings", "", *(f"- {w}" for w in why), "", "```json",
        json.dumps({"options": {k: v for k, v in vars(opts).items() if k != "synthetic"},
                    "synthetic_arm": vars(opts.synthetic), "resolved": vars(r)}, indent=1, default=str), "```", "",
        "## Time (seconds, this call; stages reused from an earlier call count their first time)", "",
        *(f"- {k}: {v:.0f}" for k, v in times.items()), f"- this call in all: {seconds:.0f}"]
    tmp = out / f".report.md.tmp{os.getpid()}"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "report.md")
    record = {"verdict": sentence, "best_real_only": best, "per_seed": values, "paired": stats, "groups": groups}
    tmp = out / f".report.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out / "report.json")
    return record | {"terminal": terminal}
