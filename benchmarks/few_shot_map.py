"""Where the gain stops: the per-class paired gain of each regime's default arm over its best real-only
arm, against that class's real image count, pooled over the results files of benchmarks/tail_gain.py.

    python benchmarks/few_shot_map.py [benchmarks/results/tail_gain_rho1000.json benchmarks/results/tail_gain_rho100.json]

Writes benchmarks/results/few_shot_map.png and prints one row per class (count, gain, 95% interval).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    files = [Path(a) for a in argv] or [p for p in (RESULTS / "tail_gain_rho1000.json", RESULTS / "tail_gain_rho100.json")
                                        if p.exists()]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    rows = []
    for f, marker in zip(files, "os^D"):
        r = json.loads(f.read_text())
        arm = r["default_arm"]
        gains = r["per_class_gain_vs_best_real"].get(arm)
        if gains is None:
            print(f"{f}: no per-class gain for its default arm {arm!r}; skipped")
            continue
        x = [g["count"] for g in gains]
        y = [g["mean"] for g in gains]
        err = [[g["mean"] - g["lo"] for g in gains], [g["hi"] - g["mean"] for g in gains]]
        ax.errorbar(x, y, yerr=err, fmt=marker, capsize=3,
                    label=f"rho={r['imbalance']:g}: {arm} - {r['best_real']} ({len(r['seeds'])} seeds)")
        rows += [(r["imbalance"], g["class"], g["count"], g["mean"], g["lo"], g["hi"]) for g in gains]
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(20, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("real training images of the class (log)")
    ax.set_ylabel("paired accuracy gain (points, 95% CI)")
    ax.set_title("per-class gain of + synthetic over the best real-only arm")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "few_shot_map.png", dpi=110)
    print("| rho | class | images | gain | 95% CI |\n| --- | --- | --- | --- | --- |")
    for rho, c, n, m, lo, hi in sorted(rows, key=lambda t: t[2]):
        print(f"| {rho:g} | {c} | {n} | {m:+.2f} | [{lo:+.2f}, {hi:+.2f}] |")


if __name__ == "__main__":
    main()
