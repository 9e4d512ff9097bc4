"""Which filter criterion holds across class counts and classifier strengths (issue 34, item 5)?

A synthetic case with no images: class c's "real" points are mu_c + noise in d dimensions, with a
long-tailed count per class; a softmax-regression classifier, trained briefly with class-balanced
weights, plays the filter classifier (weak at 100 classes, strong at 10). The "generated" points of
class c are half good (mu_c + noise, like its real points) and half bad (another class's points
labelled c, the off-class images a filter exists to drop). Each criterion keeps a subset; the table
gives the share of good and bad points kept, and how many of the classes whose held-out real points
the classifier recognises better than chance (top-1 recall > 1/C) keep any.

    python benchmarks/filter_criteria.py [--cnn [--cifar UNPACKED/cifar10]]
    # writes benchmarks/results/filter_criteria.{md,json}

``--cnn`` adds cases with images and the run's own filter classifier: 100 classes of MNIST digit
pairs ("07", "42", ...) at 16x16, and with ``--cifar`` of CIFAR-10 image pairs (natural images),
long-tailed 500 -> 5 (about 10,900 images, the size of issue 34's folder), resnet8 trained for 4
epochs with class-balanced re-sampling, as ``run`` trains it. Their held-out real images stand in
for perfect generated images, and the same images labelled as another class for off-class ones (a
few minutes each on 2 CPU cores; needs ../shared/datasets/mnist.npz).

The candidates calibrated on held-out real scores get them by cross-fitting (K folds: each real
point scored by the model that did not see it; generated points by the model of fold ``i mod K``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = {  # name: (classes, spread of the class means, training epochs, learning rate, largest, smallest class)
    "100 classes, weak": (100, 0.4, 2, 0.05, 200, 5),
    "100 classes, strong": (100, 1.5, 30, 0.5, 200, 5),
    "10 classes, weak": (10, 0.3, 2, 0.05, 300, 5),
    "10 classes, strong": (10, 1.5, 30, 0.5, 300, 5),
}
DIM, GENERATED, FOLDS, SEEDS = 32, 60, 2, 3


def _assign_folds(labels, folds: int, seed: int):
    """int (N,) fold of each real image, dealt per class in a seeded random order, so every fold holds
    about the same share of each class (a class of n < folds images fills only n folds)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 7])
    out = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out[idx[rng.permutation(len(idx))]] = (np.arange(len(idx)) + int(rng.integers(folds))) % folds
    return out


def _class_thresholds(held_p, held_y, num_classes: int, quantile: float):
    """float (C,) per class c: the ``quantile`` of the probability of c over c's held-out real images
    (NaN for a class with none)."""
    held_p, held_y = np.asarray(held_p), np.asarray(held_y)
    own = held_p[np.arange(len(held_y)), held_y] if len(held_y) else np.zeros(0)
    return np.array([np.quantile(own[held_y == c], quantile) if (held_y == c).any() else np.nan
                     for c in range(num_classes)])


def _calibrated_keep(gen_p, gen_y, held_p, held_y, quantile: float, floor=None, ceiling=None):
    """bool (N,): keep generated image i of class c when its probability of c is at least c's threshold
    (``class_thresholds``), bounded below by ``floor`` and above by ``ceiling`` where given."""
    gen_p, gen_y = np.asarray(gen_p), np.asarray(gen_y)
    t = _class_thresholds(held_p, held_y, gen_p.shape[1], quantile)
    if ceiling is not None:
        t = np.minimum(t, ceiling)
    if floor is not None:
        t = np.maximum(t, floor)
    t = np.where(np.isnan(t), 1.0 if ceiling is None else ceiling, t)
    return gen_p[np.arange(len(gen_y)), gen_y] >= t[gen_y]


def _counts(C, n_max, n_min):
    return np.round(n_max * (n_min / n_max) ** (np.arange(C) / max(1, C - 1))).astype(int)


def _fit(x, y, C, epochs, lr, seed):
    """Softmax regression, class-balanced loss weights, SGD: a deliberately small classifier."""
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(x.shape[1], C, requires_grad=True)
    b = torch.zeros(C, requires_grad=True)
    counts = np.bincount(y, minlength=C)
    cw = torch.tensor(np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0), dtype=torch.float32)
    X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    opt = torch.optim.SGD([w, b], lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=g).split(64):
            loss = torch.nn.functional.cross_entropy(X[idx] @ w + b, Y[idx], weight=cw * C / cw.sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return lambda z: torch.softmax(torch.tensor(z, dtype=torch.float32) @ w + b, 1).detach().numpy()


def _case(C, spread, epochs, lr, n_max, n_min, seed):
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, spread, (C, DIM))
    n = _counts(C, n_max, n_min)
    y = np.repeat(np.arange(C), n)
    x = mu[y] + rng.normal(0, 1, (len(y), DIM))
    test_y = np.repeat(np.arange(C), 50)
    test_x = mu[test_y] + rng.normal(0, 1, (len(test_y), DIM))
    gen_y = np.repeat(np.arange(C), GENERATED)
    good = rng.random(len(gen_y)) < 0.5
    other = (gen_y + rng.integers(1, C, len(gen_y))) % C
    gen_x = np.where(good[:, None], mu[gen_y], mu[other]) + rng.normal(0, 1, (len(gen_y), DIM))
    folds = _assign_folds(y, FOLDS, seed)
    models = [_fit(x[folds != k], y[folds != k], C, epochs, lr, seed + k) for k in range(FOLDS)]
    held = np.zeros((len(y), C))
    for k in range(FOLDS):
        held[folds == k] = models[k](x[folds == k])
    which = np.arange(len(gen_y)) % FOLDS
    gen_p = np.zeros((len(gen_y), C))
    for k in range(FOLDS):
        gen_p[which == k] = models[k](gen_x[which == k])
    full = _fit(x, y, C, epochs, lr, seed + 99)
    test_p = np.mean([m(test_x) for m in models], 0)
    recall = np.array([(test_p[test_y == c].argmax(1) == c).mean() for c in range(C)])
    return dict(y=y, held=held, gen_y=gen_y, gen_p=gen_p, gen_p_full=full(gen_x), good=good, recall=recall,
                train_p=full(x), balanced=float(recall.mean()))


def _candidates(C):
    from cbdm_aug.evaluate import criteria as K

    def fixed(d):
        return d["gen_p_full"][np.arange(len(d["gen_y"])), d["gen_y"]] >= 0.5

    def ratio(m):
        return lambda d: d["gen_p_full"][np.arange(len(d["gen_y"])), d["gen_y"]] >= min(0.5, m / C)

    def top_k(d):
        k = max(1, int(np.ceil(C / 10)))
        p = d["gen_p_full"]
        own = p[np.arange(len(p)), d["gen_y"]]
        return (p > own[:, None]).sum(1) < k

    def top_k_chance(d):  # the library's rule before the per-class threshold
        return K.recognised(d["gen_p_full"], d["gen_y"], 0.1, None)

    def false_positive(share):  # the library's rule: above all but ``share`` of the other classes' training scores
        return lambda d: K.recognised(d["gen_p_full"], d["gen_y"], None, None,
                                      K.class_thresholds(d["train_p"], d["y"], share))

    def quantile_train(q):  # calibrated on the classifier's own training points (no held-out)
        return lambda d: _calibrated_keep(d["gen_p_full"], d["gen_y"], d["train_p"], d["y"], q)

    def quantile_held(q):
        return lambda d: _calibrated_keep(d["gen_p"], d["gen_y"], d["held"], d["y"], q)

    return {"p >= 0.5 (today)": fixed, "p >= min(0.5, 2/C)": ratio(2), "p >= min(0.5, 5/C)": ratio(5),
            "c in top ceil(C/10)": top_k, "top ceil(C/10) and p >= 1/C (the rule before)": top_k_chance,
            "above all but 1% of the others' training scores (kept)": false_positive(0.01),
            "above all but 2% of the others' training scores": false_positive(0.02),
            "max(1/C, min(0.5, q0.25 own training))": lambda d: _calibrated_keep(
                d["gen_p_full"], d["gen_y"], d["train_p"], d["y"], 0.25, floor=1 / C, ceiling=0.5), "q0.25 of own training scores": quantile_train(0.25),
            "q0.1 of held-out real scores": quantile_held(0.1),
            "q0.25 of held-out real scores": quantile_held(0.25),
            "q0.5 of held-out real scores": quantile_held(0.5),
            "max(1/C, q0.25 held-out)": lambda d: _calibrated_keep(d["gen_p"], d["gen_y"], d["held"], d["y"], 0.25,
                                                                    floor=1 / C),
            "max(1/C, min(0.5, q0.25 held-out))": lambda d: _calibrated_keep(d["gen_p"], d["gen_y"], d["held"],
                                                                              d["y"], 0.25, floor=1 / C, ceiling=0.5)}


def _pairs(source: str, n_max: int = 500, n_min: int = 5, held: int = 20, seed: int = 0):
    """A 100-class image set: class 10a + b is an image of class a beside one of class b at 16x16,
    long-tailed n_max -> n_min (about 10,900 images at 500 -> 5, the size of issue 34's folder), and
    ``held`` held-out images a class from the test split. ``source``: "mnist" (../shared/datasets) or
    an unpacked CIFAR-10 image folder (``cifar10`` with ``train/`` and ``test/``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if source == "mnist":
        mnist = np.load(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist.npz")
        splits = {s: [mnist[f"x_{s}"][mnist[f"y_{s}"] == d][..., 0] for d in range(10)] for s in ("train", "test")}
        load = lambda pool, i: Image.fromarray(pool[i])  # noqa: E731
        size = lambda pool: len(pool)  # noqa: E731
    else:
        splits = {s: [sorted((Path(source) / s / c).iterdir()) for c in sorted(p.name for p in (Path(source) / s).iterdir())]
                  for s in ("train", "test")}
        load = lambda pool, i: Image.open(pool[i]).convert("RGB")  # noqa: E731
        size = len

    def make(split, labels):
        pools = splits[split]
        half = lambda d: np.asarray(load(pools[d], int(rng.integers(size(pools[d])))).resize((8, 16), Image.BILINEAR))  # noqa: E731
        x = np.stack([np.concatenate([half(c // 10), half(c % 10)], 1) for c in labels])
        return x[..., None] if x.ndim == 3 else x

    labels = np.repeat(np.arange(100), _counts(100, n_max, n_min))
    test_labels = np.repeat(np.arange(100), held)
    return make("train", labels), labels, make("test", test_labels), test_labels


def cnn_case(source: str, work: Path, epochs: int = 4) -> list[dict]:
    """The run's own filter classifier (resnet8, class-balanced, ``epochs``) on 100 classes of pairs;
    held-out real images stand in for perfect generated ones, and the same images under another
    class's label for off-class ones."""
    from cbdm_aug.evaluate import criteria as K
    from cbdm_aug.evaluate.features import train_classifier_space

    x, y, hx, hy = _pairs(source)
    names = [f"{c // 10}{c % 10}" for c in range(100)]
    space = train_classifier_space(x, y, names, work / "pairs-classifier", epochs=epochs, progress=False,
                                   device="cpu", seed=0)
    p = space.predict_proba(hx).numpy()
    thresholds = K.class_thresholds(space.predict_proba(x).numpy(), y, K.FALSE_POSITIVE_SHARE)
    recall = np.array([(p[hy == c].argmax(1) == c).mean() for c in range(100)])
    recognised = recall > 1 / 100
    wrong = (hy + np.random.default_rng(1).integers(1, 100, len(hy))) % 100
    rare = np.arange(100) >= 90  # the ten smallest classes (the counts fall with the label)
    rules = {"p >= 0.5 (the old rule)": (None, 0.5, None), "top ceil(C/10) and p >= 1/C (the rule before)":
             (0.1, None, None), "above all but 1% of the others' training scores (kept)": (None, None, thresholds)}
    what = "MNIST digit" if source == "mnist" else "CIFAR-10 image"
    rows = []
    for name, (share, conf, t) in rules.items():
        good, bad = K.recognised(p, hy, share, conf, t), K.recognised(p, wrong, share, conf, t)
        keeping = np.bincount(hy[good], minlength=100) > 0
        rows.append({"case": f"100 classes of {what} pairs, resnet8 {epochs} epochs ({len(y):,} images)",
                     "criterion": name, "balanced_accuracy": round(100 * recall.mean(), 1),
                     "good_kept": round(100 * good.mean(), 1), "bad_kept": round(100 * bad.mean(), 1),
                     "good_kept_rarest": round(100 * good[rare[hy]].mean(), 1),
                     "recognised_classes_keeping": round(100 * (keeping & recognised).sum() / recognised.sum(), 1),
                     "recognised": int(recognised.sum())})
    return rows


def main() -> None:
    from _env import environment

    torch.set_num_threads(1)
    rows = []
    for case, (C, spread, epochs, lr, n_max, n_min) in CASES.items():
        per = {}
        for seed in range(SEEDS):
            d = _case(C, spread, epochs, lr, n_max, n_min, seed)
            recognised = d["recall"] > 1 / C
            for name, keep_of in _candidates(C).items():
                keep = keep_of(d)
                kept_classes = np.bincount(d["gen_y"][keep], minlength=C) > 0
                rarest = d["gen_y"] >= C - max(1, C // 10)  # the smallest tenth of the classes (counts fall with c)
                per.setdefault(name, []).append([
                    d["balanced"], keep[d["good"]].mean(), keep[~d["good"]].mean(),
                    (kept_classes & recognised).sum() / max(1, recognised.sum()), recognised.sum(),
                    keep[d["good"] & rarest].mean()])
        for name, v in per.items():
            m = np.mean(v, 0)
            rows.append({"case": case, "criterion": name, "balanced_accuracy": round(100 * m[0], 1),
                         "good_kept": round(100 * m[1], 1), "bad_kept": round(100 * m[2], 1),
                         "good_kept_rarest": round(100 * m[5], 1),
                         "recognised_classes_keeping": round(100 * m[3], 1), "recognised": round(m[4], 1)})
    if "--cnn" in sys.argv:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            rows += cnn_case("mnist", Path(work))
            if "--cifar" in sys.argv:
                rows += cnn_case(sys.argv[sys.argv.index("--cifar") + 1], Path(work))
    out = Path(__file__).parent / "results"
    from cbdm_aug.atomic import write_text_atomic

    write_text_atomic(out / "filter_criteria.json", json.dumps({"rows": rows, **environment()}, indent=1))
    lines = ["# Filter criteria across class counts and classifier strengths (`benchmarks/filter_criteria.py`)", "",
             f"{SEEDS} seeds, {GENERATED} generated points a class (half good, half another class's), "
             f"{FOLDS}-fold cross-fitted held-out scores. Points in %.", "",
             "| case | classifier balanced acc. | criterion | good kept | bad kept | good kept, the smallest tenth of "
             "the classes | recognised classes keeping any |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['case']} | {r['balanced_accuracy']} | {r['criterion']} | {r['good_kept']} | {r['bad_kept']} | "
              f"{r['good_kept_rarest']} | "
              f"{r['recognised_classes_keeping']} (of {r['recognised']}) |" for r in rows]
    write_text_atomic(out / "filter_criteria.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
