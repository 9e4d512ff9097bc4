"""Per-class pictures on a budget: which classes a grid shows, and a grid with one labelled row per class.

With ten classes every picture shows every class. With a thousand, a row per class makes a PNG
34,000 px tall that no one can read, and sampling it stalls training for minutes. So every
per-class picture (training progress grids, ``run``'s samples.png, ``evaluate-generator``'s grids,
``inspect --grid``) shows at most ``MAX_GRID_CLASSES`` classes, chosen by ``classes_to_show``: the
rarest, the largest and evenly spaced sizes in between, each row labelled with its name and count.
Light imports only (numpy; PIL inside the function): `inspect` on the cache side uses it too.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cbdm_aug.atomic import atomic_path

MAX_GRID_CLASSES = 24   # rows of a grid: at 34 px a row, under 1,000 px tall
RAREST_ALWAYS = 8       # of those, the rarest classes, where memorisation and collapse show first
LARGEST_ALWAYS = 4      # and the largest, the reference for what a learned class looks like


def classes_to_show(counts, limit: int = MAX_GRID_CLASSES) -> list[int]:
    """Class indices for a per-class picture, largest class first. All classes when there are at
    most ``limit``; else the ``RAREST_ALWAYS`` rarest, the ``LARGEST_ALWAYS`` largest and, in between,
    classes evenly spaced by size rank. Ties break by class index, so the choice is deterministic."""
    counts = np.asarray(counts)
    order = np.argsort(-counts, kind="stable")  # largest first
    if len(counts) <= limit:
        return order.tolist()
    rare, large = min(RAREST_ALWAYS, limit // 2), min(LARGEST_ALWAYS, limit // 4)
    middle = order[large:len(order) - rare]
    k = limit - rare - large
    picks = middle[np.linspace(0, len(middle) - 1, k).round().astype(int)] if k > 0 else []
    chosen = list(dict.fromkeys([*order[:large].tolist(), *np.asarray(picks).tolist(), *order[-rare:].tolist()]))
    return sorted(chosen, key=lambda c: (-counts[c], c))


def selection_note(shown: int, total: int) -> str:
    """One line for a picture that shows a selection of the classes."""
    if shown >= total:
        return f"all {total} classes, largest first"
    return (f"{shown} of {total} classes: the {RAREST_ALWAYS} rarest, the {LARGEST_ALWAYS} largest and evenly spaced "
            "sizes in between, largest first; every class's numbers are in the tables")


def labelled_rows(rows: list[tuple[str, np.ndarray]], path: str | os.PathLike, header: str = "",
                  per_row: int = 8, columns: list[tuple[int, str]] | None = None) -> tuple[int, int]:
    """Write a PNG with one row per (label, uint8 images (n, H, W, C)) pair: the label, then up to
    ``per_row`` tiles; small images are enlarged (nearest) to >= 32 px. ``columns`` marks a gap and a
    heading before tile column j, e.g. [(0, "real"), (8, "generated")]. Returns (width, height) in px."""
    from PIL import Image, ImageDraw

    first = next((im for _, im in rows if len(im)), None)
    size, channels = (first.shape[1], first.shape[-1]) if first is not None else (8, 1)
    scale = max(1, -(-32 // size))
    tile = size * scale + 2
    starts = sorted(j for j, _ in columns or [])
    label_w = 8 + 7 * max([len(label) for label, _ in rows] + [1])
    head_h = 2 + 14 * (bool(header) + bool(columns))
    x_of = lambda j: label_w + tile * j + 10 * sum(1 for g in starts[1:] if g <= j)  # noqa: E731
    width = max([x_of(per_row - 1) + tile + 2, 8 + 6 * len(header)]
                + [x_of(j) + 6 * len(title) + 8 for j, title in columns or []])  # no heading cut off
    grid = Image.new("RGB", (width, head_h + tile * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    if header:
        draw.text((4, 2), header, fill="black")
    for j, title in columns or []:
        draw.text((x_of(j), 2 + 14 * bool(header)), title, fill="black")
    for r, (label, images) in enumerate(rows):
        y = head_h + r * tile
        draw.text((4, y + tile // 2 - 6), label, fill="black")
        for j, im in enumerate(images[:per_row]):
            im = im[..., 0] if channels == 1 else im
            tile_img = Image.fromarray(np.ascontiguousarray(im)).convert("RGB")
            grid.paste(tile_img.resize((size * scale, size * scale), Image.NEAREST), (x_of(j) + 1, y + 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        grid.save(tmp)
    return grid.size
