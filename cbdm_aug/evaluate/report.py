"""The evaluation report: ``report.json``, a Markdown summary, a PNG grid per class (generated
images next to the class's real training images) and a bar plot of per-class recall and KID
against class size."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cbdm_aug.atomic import atomic_path, write_text_atomic

GRID_PER_SIDE = 16   # images per side of a class grid (4 x 4)


def _fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def summary_markdown(r: dict) -> str:
    w, t, fs = r["whole_set"], r["tail"], r["feature_space"]
    lines = [
        f"# Generator evaluation: {r['generator']['run_dir'] or r['generator']['cache']}",
        "",
        f"Feature space: **{fs['name']}**: {fs['description']}.",
        f"{fs['note']}",
        "",
        f"Whole set ({r['options']['samples_per_class']} generated images per class, "
        f"{sum(r['real']['reference_per_class'])} real reference images in all): FID {_fmt(w['fid'], 2)}, "
        f"KID {_fmt(w['kid'], 4)} +- {_fmt(w['kid_std'], 4)}, precision {_fmt(w['precision'])}, "
        f"recall {_fmt(w['recall'])} (k={r['options']['k']}), near-copies {100 * w['near_copy_share']:.1f}%.",
        "",
        f"Tail ({', '.join(t['classes'])}): KID {_fmt(t['kid'], 4)}, precision {_fmt(t['precision'])}, "
        f"recall {_fmt(t['recall'])}, near-copies {100 * t['near_copy_share']:.1f}%"
        + (f", CAS {_fmt(t.get('cas'))}" if t.get("cas") is not None else "") + ".",
        "",
        "| class | train images | KID | precision | recall | nn pixel dist (median) | train-train nn (median) | near-copies | CAS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cas = r.get("cas") or {}
    for i, row in enumerate(r["per_class"]):
        tail = " (tail)" if row["class"] in t["classes"] else ""
        acc = cas.get("per_class", [None] * len(r["per_class"]))[i] if cas else None
        lines.append(f"| {row['class']}{tail} | {row['train_count']} | {_fmt(row['kid'], 4)} | "
                     f"{_fmt(row['precision'])} | {_fmt(row['recall'])} | {_fmt(row['nn_pixel']['median'])} | "
                     f"{_fmt(row['train_nn_median_pixel'])} | {100 * row['near_copy_share']:.1f}% | {_fmt(acc)} |")
    if cas:
        lines += ["", f"Classification Accuracy Score (trained on generated images only, tested on real): "
                      f"top-1 {_fmt(cas['top1'])}, balanced {_fmt(cas['balanced'])}, many {_fmt(cas['many'])}, "
                      f"medium {_fmt(cas['medium'])}, few {_fmt(cas['few'])}."]
    else:
        lines += ["", "Classification Accuracy Score: not computed (pass --test DATA)."]
    lines += ["", "Definitions:", *(f"- {k}: {v}" for k, v in r["definitions"].items()), ""]
    return "\n".join(lines)


def _tiles(images: np.ndarray, n: int, tile: int) -> np.ndarray:
    """uint8 (n images, H, W, C) -> one RGB square grid of side ceil(sqrt(n)), blank where missing."""
    from cbdm_aug.data.convert import convert_images

    side = int(np.ceil(np.sqrt(n)))
    canvas = np.full((side * (tile + 2), side * (tile + 2), 3), 255, np.uint8)
    if len(images):
        images = convert_images(np.ascontiguousarray(images[:n]), tile, 3) if images.shape[1] != tile or images.shape[-1] != 3 \
            else images[:n]
    for i, im in enumerate(images[:n]):
        r, c = divmod(i, side)
        canvas[r * (tile + 2) + 1:r * (tile + 2) + 1 + tile, c * (tile + 2) + 1:c * (tile + 2) + 1 + tile] = im
    return canvas


def class_grid_png(path: Path, generated: np.ndarray, real: np.ndarray, title: str, per_side: int = GRID_PER_SIDE) -> None:
    """Generated images (left) next to real images (right) of one class, upscaled to >= 32 px tiles."""
    from PIL import Image, ImageDraw

    size = generated.shape[1] if len(generated) else real.shape[1]
    tile = size * max(1, -(-32 // size))
    # Nearest-neighbour upscaling keeps pixels sharp; convert_images would blur them.
    up = lambda x: np.repeat(np.repeat(x, tile // size, 1), tile // size, 2) if len(x) else x  # noqa: E731
    left = _tiles(up(generated), per_side, tile)
    right = _tiles(up(real), per_side, tile)
    gap, head = 12, 30
    img = Image.new("RGB", (left.shape[1] + gap + right.shape[1], head + left.shape[0]), "white")
    img.paste(Image.fromarray(left), (0, head))
    img.paste(Image.fromarray(right), (left.shape[1] + gap, head))
    draw = ImageDraw.Draw(img)
    draw.text((2, 2), title, fill="black")
    draw.text((2, 16), f"generated ({min(len(generated), per_side)} of {len(generated)})", fill="black")
    draw.text((left.shape[1] + gap + 2, 16), f"real ({min(len(real), per_side)} of {len(real)})", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        img.save(tmp)


def bar_plot_png(path: Path, r: dict) -> None:
    """Per-class recall and KID, classes ordered by training-set size (shown on a log axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cbdm_aug.classify.report import MAX_CLASSES_PLOTTED

    rows = sorted(r["per_class"], key=lambda row: -row["train_count"])
    nan = lambda v: np.nan if v is None else v  # noqa: E731
    if len(rows) > MAX_CLASSES_PLOTTED:  # a bar per class is unreadable: each metric against class size
        n = np.array([row["train_count"] for row in rows], float)
        fig, axes = plt.subplots(2, 1, figsize=(6.4, 6), sharex=True)
        axes[0].scatter(n, [nan(row["recall"]) for row in rows], s=6, alpha=0.5, label="recall")
        axes[0].scatter(n, [nan(row["precision"]) for row in rows], s=6, alpha=0.5, label="precision")
        axes[0].set_ylim(-0.02, 1.05)
        axes[0].set_ylabel(f"k={r['options']['k']}")
        axes[0].legend(loc="lower left", fontsize=8)
        axes[1].scatter(n, [nan(row["kid"]) for row in rows], s=6, alpha=0.5, color="tab:red")
        axes[1].set_ylabel("KID")
        axes[1].set_xscale("log")
        axes[1].set_xlabel(f"training images of the class ({len(rows)} classes, a point each)")
    else:
        names = [f"{row['class']}\n({row['train_count']})" for row in rows]
        x = np.arange(len(rows))
        fig, axes = plt.subplots(3, 1, figsize=(max(6, 0.5 * len(rows) + 2), 8), sharex=True)
        axes[0].bar(x, [row["train_count"] for row in rows], color="0.6")
        axes[0].set_yscale("log")
        axes[0].set_ylabel("training images")
        axes[1].bar(x, [nan(row["recall"]) for row in rows], color="tab:blue", label="recall")
        axes[1].plot(x, [nan(row["precision"]) for row in rows], "o-", color="tab:orange", label="precision")
        axes[1].set_ylim(0, 1.05)
        axes[1].set_ylabel(f"k={r['options']['k']}")
        axes[1].legend(loc="lower left", fontsize=8)
        axes[2].bar(x, [nan(row["kid"]) for row in rows], color="tab:red")
        axes[2].set_ylabel("KID")
        axes[2].set_xticks(x, names, fontsize=7)
    fig.suptitle(f"per-class metrics, {r['feature_space']['name']} feature space (head -> tail)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_report(r: dict, out: Path, fake_x: np.ndarray, fake_l: np.ndarray, train_x: np.ndarray,
                 train_l: np.ndarray) -> None:
    """Write report.json, report.md, grids/<class index>_<name>.png (for at most
    ``pictures.MAX_GRID_CLASSES`` classes: the rarest, the largest, sizes in between) and per_class.png."""
    from cbdm_aug.pictures import classes_to_show

    out = Path(out)
    write_text_atomic(out / "report.json", json.dumps(r, indent=1))
    write_text_atomic(out / "report.md", summary_markdown(r))
    counts = np.bincount(train_l, minlength=len(r["class_names"]))
    for c in classes_to_show(counts):
        name = r["class_names"][c]
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        class_grid_png(out / "grids" / f"{c:03d}_{safe}.png", fake_x[fake_l == c], train_x[train_l == c],
                       f"class {name} ({int((train_l == c).sum())} training images)")
    bar_plot_png(out / "per_class.png", r)
