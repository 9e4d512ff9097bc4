"""Reports of classifier runs: a run's summary and plot, the aggregate over seeds, and the
side-by-side comparison of several runs. Accuracies are stored as fractions and shown as %.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cbdm_aug.atomic import atomic_path, write_text_atomic
from cbdm_aug.errors import UserError

HEADLINE = ("top1", "balanced", "many", "medium", "few")
LABELS = {"top1": "overall", "balanced": "balanced", "many": "many", "medium": "medium", "few": "few"}


class RunError(UserError):
    """A folder that holds no classifier run."""


def _pct(v, std=None) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[j]) for r in [headers, *rows]) for j in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(headers), "| " + " | ".join("-" * w for w in widths) + " |", *map(fmt, rows)])


# Past this many classes one line per class reads as noise: the plot bins classes by size instead.
MAX_CLASSES_PLOTTED = 20
LABEL_CLASSES_UP_TO = 20  # and up to this many, each point carries its class name


def size_bins(counts, per_bin: float = 2.0) -> list[tuple[int, int]]:
    """Log-spaced [lo, hi] ranges of class size (training images) that cover ``counts``, each spanning
    a factor of about ``per_bin``; empty ranges are dropped."""
    counts = np.asarray(counts)
    lo, hi = max(1, int(counts.min())), int(counts.max())
    edges = sorted({int(round(e)) for e in np.geomspace(lo, hi + 1, max(2, int(np.ceil(np.log((hi + 1) / lo) / np.log(per_bin))) + 1))})
    edges[0], edges[-1] = lo, hi + 1
    bins = [(a, b - 1) for a, b in zip(edges, edges[1:]) if b - 1 >= a]
    return [(a, b) for a, b in bins if ((counts >= a) & (counts <= b)).any()]


def binned_accuracy(counts, acc, bins) -> list[dict]:
    """Per size bin: the mean accuracy (%) of its classes with a 95% t-interval over the classes, and
    how many classes it holds. ``acc`` is per class, fractions in [0, 1] (None for a class never tested)."""
    from cbdm_aug.classify.paired import t975

    counts = np.asarray(counts)
    a = np.array([np.nan if v is None else 100 * v for v in acc], dtype=float)
    out = []
    for lo, hi in bins:
        v = a[(counts >= lo) & (counts <= hi) & ~np.isnan(a)]
        half = t975(len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        out.append({"lo": lo, "hi": hi, "classes": int(len(v)), "mean": float(v.mean()) if len(v) else float("nan"),
                    "ci95": float(half)})
    return out


def _plot(series: list[tuple[str, list[int], list]], path: Path, thresholds: dict | None, title: str,
          class_names: list[str] | None = None) -> None:
    """Write ``per_class_figure`` to ``path``."""
    import matplotlib.pyplot as plt

    fig = per_class_figure(series, thresholds, title, class_names)
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def per_class_figure(series: list[tuple[str, list[int], list]], thresholds: dict | None, title: str,
                     class_names: list[str] | None = None):
    """Per-class accuracy against training images per class (log x), one marker series per run. Up to
    ``MAX_CLASSES_PLOTTED`` classes a point per class (named, up to ``LABEL_CLASSES_UP_TO``); past it, one
    point per log-spaced size bin with its 95% interval over the bin's classes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    counts0 = series[0][1]
    binned = len(counts0) > MAX_CLASSES_PLOTTED
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    if binned:
        bins = size_bins(counts0)
        for k, (name, counts, acc) in enumerate(series):
            rows = binned_accuracy(counts, acc, bins)
            x = np.array([np.sqrt(r["lo"] * r["hi"]) for r in rows]) * (1 + 0.03 * (k - (len(series) - 1) / 2))
            mean = np.array([r["mean"] for r in rows], dtype=float)  # already %
            half = np.array([r["ci95"] for r in rows], dtype=float)
            # the interval, cut to what an accuracy can be
            yerr = [mean - np.clip(mean - half, 0, 100), np.clip(mean + half, 0, 100) - mean]
            ax.errorbar(x, mean, yerr=yerr, fmt="o-", ms=4, lw=1, capsize=3, alpha=0.85, label=name)
        ax.set_xlabel(f"real training images of the class ({len(counts0)} classes in {len(bins)} size bins; "
                      "bars: 95% interval over a bin's classes)", fontsize=8)
    else:
        for name, counts, acc in series:
            order = np.argsort(counts, kind="stable")
            x = np.asarray(counts, dtype=float)[order]
            y = np.array([np.nan if a is None else 100 * a for a in np.asarray(acc, dtype=object)[order]], dtype=float)
            ax.plot(x, y, "o-", ms=4, lw=1, alpha=0.85, label=name)
        if class_names is not None and len(class_names) <= LABEL_CLASSES_UP_TO:
            name, counts, acc = series[0]
            for c, label in enumerate(class_names):
                if acc[c] is not None:
                    ax.annotate(str(label), (counts[c], 100 * acc[c]), textcoords="offset points", xytext=(3, 4),
                                fontsize=6, alpha=0.7)
        ax.set_xlabel("real training images of the class")
    if thresholds:  # the group boundaries that fall inside the data's range of class sizes
        for t in thresholds.values():
            if min(counts0) <= t <= max(counts0):
                ax.axvline(t, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    # plain numbers on the log axis: matplotlib's default labels a short range "2x10^1"
    # and majors at 1, 2, 5 x 10^k: with decades alone a 14..140 range was labelled only "100"
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if binned:  # one tick per bin, named by its range
        ax.set_xticks([np.sqrt(lo * hi) for lo, hi in bins], [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in bins],
                      fontsize=7)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()  # resolve the tick labels, so callers (and tests) can read them
    return fig


def _threshold_values(metrics: dict) -> dict:
    t = metrics["thresholds"]
    return {"many": float(t["many"].split()[-1]), "few": float(t["few"].split()[-1])}


def write_run_report(result: dict, out: Path) -> None:
    """summary.md and per_class.png of one run."""
    m, tc = result["metrics"], result["train_counts"]
    head = md_table([LABELS[k] for k in HEADLINE], [[_pct(m[k]) for k in HEADLINE]])
    rows = [[name, str(tc["real"][c]), str(tc["synthetic_available"][c]),
             str(tc["epoch0_draws"]["real"][c]), str(tc["epoch0_draws"]["synthetic"][c]),
             str(m["test_counts"][c]), _pct(m["per_class"][c]),
             next(g for g, ids in m["groups"].items() if c in ids)]
            for c, name in enumerate(result["class_names"])]
    per_class = md_table(["class", "real train", "synthetic in cache", "real drawn/epoch",
                          "synthetic drawn/epoch", "test", "accuracy %", "group"], rows)
    groups = ", ".join(f"{g} {t}" for g, t in m["thresholds"].items())
    text = (f"# {result['recipe']} (seed {result['seed']})\n\n"
            f"Train: {result['data']['train']}; test: {result['data']['test']}; "
            f"{result['run']['device']}, {result['run']['seconds']} s.\n\n"
            f"Accuracy (%) on the test split; groups by real training images: {groups}.\n\n"
            f"{head}\n\n{per_class}\n")
    write_text_atomic(out / "summary.md", text)
    _plot([(f"{result['recipe']} seed {result['seed']}", tc["real"], m["per_class"])], out / "per_class.png",
          _threshold_values(m), f"{result['recipe']}: top-1 {_pct(m['top1'])}%", class_names=result["class_names"])


def aggregate_runs(runs: list[dict]) -> dict:
    """Mean, sample std (ddof=1; 0 for one run), min and max of the headline metrics over seeds."""
    stats = {}
    for k in HEADLINE:
        vals = [r["metrics"][k] for r in runs]
        if any(v is None for v in vals):
            stats[k] = None
            continue
        a = np.asarray(vals, dtype=float)
        stats[k] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                    "min": float(a.min()), "max": float(a.max()), "values": a.tolist()}
    per_class = np.array([[np.nan if v is None else v for v in r["metrics"]["per_class"]] for r in runs])
    first = runs[0]
    return {"recipe": first["recipe"], "seeds": [r["seed"] for r in runs], "aggregate": stats,
            "per_class_mean": [None if np.isnan(col).all() else float(np.nanmean(col)) for col in per_class.T],
            "class_names": first["class_names"], "train_counts": first["train_counts"],
            "thresholds": first["metrics"]["thresholds"], "groups": first["metrics"]["groups"]}


def write_aggregate_report(agg: dict, out: Path) -> None:
    """aggregate.json and aggregate.md: mean ± std over seeds."""
    write_text_atomic(out / "aggregate.json", json.dumps(agg, indent=1))
    s = agg["aggregate"]
    rows = [[LABELS[k], "n/a" if s[k] is None else _pct(s[k]["mean"], s[k]["std"]),
             "n/a" if s[k] is None else f"{100 * s[k]['min']:.2f}..{100 * s[k]['max']:.2f}"] for k in HEADLINE]
    write_text_atomic(
        out / "aggregate.md",
        f"# {agg['recipe']}: {len(agg['seeds'])} seeds {agg['seeds']}\n\n"
        f"Accuracy (%), mean ± sample std over seeds, and the range.\n\n"
        + md_table(["metric", "mean ± std", "range"], rows) + "\n")


def load_run(path: str | Path) -> dict:
    """A run folder (metrics.json) or a seeds folder (aggregate.json) as one comparable record:
    ``name``, ``mean`` and ``std`` per headline metric, ``per_class``, ``counts``, ``seeds``."""
    p = Path(path)
    if (p / "aggregate.json").is_file():
        a = json.loads((p / "aggregate.json").read_text())
        s = a["aggregate"]
        return {"name": p.name, "recipe": a["recipe"], "seeds": a["seeds"],
                "mean": {k: None if s[k] is None else s[k]["mean"] for k in HEADLINE},
                "std": {k: None if s[k] is None else s[k]["std"] for k in HEADLINE},
                "per_class": a["per_class_mean"], "counts": a["train_counts"]["real"],
                "class_names": a["class_names"], "thresholds": a["thresholds"]}
    if (p / "metrics.json").is_file():
        r = json.loads((p / "metrics.json").read_text())
        m = r["metrics"]
        return {"name": p.name, "recipe": r["recipe"], "seeds": [r["seed"]],
                "mean": {k: m[k] for k in HEADLINE}, "std": {k: None for k in HEADLINE},
                "per_class": m["per_class"], "counts": r["train_counts"]["real"],
                "class_names": r["class_names"], "thresholds": m["thresholds"]}
    raise RunError(f"{p}: not a classifier run (no metrics.json or aggregate.json); "
                   "pass folders written by `cbdm-aug train-classifier --out`")


def compare_table(runs: list[dict]) -> str:
    """One row per run: each headline metric (mean ± std over seeds when there are several), and
    for every run after the first its gain over the first in points."""
    base = runs[0]
    headers = ["run", "seeds", *(LABELS[k] for k in HEADLINE)]
    rows = []
    for i, r in enumerate(runs):
        cells = [r["name"], str(len(r["seeds"]))]
        for k in HEADLINE:
            v, cell = r["mean"][k], _pct(r["mean"][k], r["std"][k])
            if i and v is not None and base["mean"][k] is not None:
                cell += f" ({100 * (v - base['mean'][k]):+.2f})"
            cells.append(cell)
        rows.append(cells)
    gains = f"; (+x.xx) is the gain over {base['name']} in points" if len(runs) > 1 else ""
    return (md_table(headers, rows) + f"\n\nAccuracy (%){gains}. Groups by real training images: "
            + ", ".join(f"{g} {t}" for g, t in base["thresholds"].items()))


def compare_plot(runs: list[dict], path: str | Path) -> None:
    """One per-class accuracy plot of all runs."""
    t = runs[0]["thresholds"]
    _plot([(r["name"], r["counts"], r["per_class"]) for r in runs], Path(path),
          {"many": float(t["many"].split()[-1]), "few": float(t["few"].split()[-1])},
          "per-class accuracy against class size" if len(runs) > 3
          else "per-class accuracy: " + " vs ".join(r["name"] for r in runs),  # the legend names many runs
          class_names=runs[0].get("class_names"))
