"""Procedural long-tailed sets with any number of classes, for measuring cost against classes and images.

Class c is a 16x16 grey template of a few strokes drawn from its own seed; an image of it is the
template shifted by up to one pixel, with its contrast jittered and noise added. Counts fall
exponentially from ``n_max`` to ``n_max / imbalance`` (``data.longtail``'s "exp" profile, as for MNIST-LT).
Nothing here is downloaded; the same arguments give the same arrays.

    python benchmarks/_procedural.py --classes 1000 --max 20 --min 1 --out /tmp/c1000.npz
"""
from __future__ import annotations

import argparse

import numpy as np

from cbdm_aug.data.longtail import longtail_counts
from cbdm_aug.data.npz import write_npz


def _templates(num_classes: int, size: int, seed: int) -> np.ndarray:
    """float32 (C, size, size) in [0, 1]: each class's strokes, from (seed, c)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((num_classes, size, size), np.float32)
    for c in range(num_classes):
        rng = np.random.default_rng([seed, c])
        for _ in range(rng.integers(2, 5)):  # 2-4 strokes: segments between random points, drawn thick
            (x0, y0), (x1, y1) = rng.uniform(2, size - 3, (2, 2))
            t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / max((x1 - x0) ** 2 + (y1 - y0) ** 2, 1e-6), 0, 1)
            d = np.hypot(xx - (x0 + t * (x1 - x0)), yy - (y0 + t * (y1 - y0)))
            out[c] = np.maximum(out[c], np.clip(1.5 - d, 0, 1))
    return out


def images_for(labels: np.ndarray, num_classes: int, size: int = 16, seed: int = 0, templates=None) -> np.ndarray:
    """uint8 (len(labels), size, size, 1): an image of each label's class, from (seed, labels' length)."""
    templates = _templates(num_classes, size, 0) if templates is None else templates
    rng = np.random.default_rng([seed, num_classes, len(labels)])
    x = np.empty((len(labels), size, size), np.float32)
    for i in range(0, len(labels), 65536):  # bounded scratch memory at 1M images
        yi = labels[i:i + 65536]
        shift = rng.integers(-1, 2, (len(yi), 2))
        base = templates[yi]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                m = (shift[:, 0] == dy) & (shift[:, 1] == dx)
                base[m] = np.roll(base[m], (dy, dx), axis=(1, 2))
        x[i:i + len(yi)] = base * rng.uniform(0.6, 1.0, (len(yi), 1, 1)) + rng.normal(0, 0.08, base.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)[..., None]


def make(num_classes: int, n_max: int, imbalance: float, test_per_class: int = 5, size: int = 16,
         seed: int = 0) -> dict[str, np.ndarray]:
    """x_train uint8 (N, size, size, 1), y_train, x_test, y_test (``test_per_class`` a class), class_names."""
    templates = _templates(num_classes, size, 0)
    counts = np.array(longtail_counts(num_classes, n_max, imbalance, "exp"))
    y_train = np.repeat(np.arange(num_classes), counts)
    y_test = np.repeat(np.arange(num_classes), test_per_class)
    names = np.array([f"c{c:0{len(str(num_classes - 1))}d}" for c in range(num_classes)])
    return {"x_train": images_for(y_train, num_classes, size, seed, templates), "y_train": y_train,
            "x_test": images_for(y_test, num_classes, size, seed + 1, templates), "y_test": y_test,
            "class_names": names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, required=True)
    ap.add_argument("--max", type=int, required=True, help="images of the largest class")
    ap.add_argument("--min", type=int, required=True, help="images of the smallest class")
    ap.add_argument("--test-per-class", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    d = make(a.classes, a.max, a.max / a.min, a.test_per_class, seed=a.seed)
    write_npz(a.out, **d)
    print(f"{a.out}: {a.classes} classes, {len(d['y_train'])} training images ({a.max} down to {a.min}), "
          f"{len(d['y_test'])} test images")


if __name__ == "__main__":
    main()
