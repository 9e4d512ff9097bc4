"""Where the gain stops: the per-class paired gain of each regime's default arm over its best real-only
arm, against that class's real image count, pooled over the results files of benchmarks/tail_gain.py.

    python benchmarks/few_shot_map.py [RESULTS.json ...]   (default: tail_gain_rho1000, _rho100, _cifar10)

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
    files = [Path(a) for a in argv] or [p for p in (RESULTS / f"tail_gain_{t}.json" for t in ("rho1000", "rho100", "cifar10"))
                                        if p.exists()]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    rows = []
    for i, (f, marker) in enumerate(zip(files, "os^D")):
        r = json.loads(f.read_text())
        data = r["dataset"].split()[0].split(".")[0]
        arm = r["default_arm"]
        gains = r["per_class_gain_vs_best_real"].get(arm)
        if gains is None:
            print(f"{f}: no per-class gain for its default arm {arm!r}; skipped")
            continue
        x = [g["count"] * 1.06 ** (i - (len(files) - 1) / 2) for g in gains]  # side by side at equal counts
        y = [g["mean"] for g in gains]
        err = [[g["mean"] - g["lo"] for g in gains], [g["hi"] - g["mean"] for g in gains]]
        ax.errorbar(x, y, yerr=err, fmt=marker, capsize=3,
                    label=f"{data} rho={r['imbalance']:g}: {arm} - {r['best_real']} "
                          f"({len(r['seeds'])} seeds)")
        rows += [(data, r["imbalance"], g["class"], g["count"], g["mean"], g["lo"], g["hi"])
                 for g in gains]
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(20, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("real training images of the class (log)")
    ax.set_ylabel("paired accuracy gain (points, 95% CI)")
    ax.set_title("per-class gain of + synthetic over the best real-only arm")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "few_shot_map.png", dpi=110)
    print("| data | rho | class | images | gain | 95% CI |\n| --- | --- | --- | --- | --- | --- |")
    for data, rho, c, n, m, lo, hi in sorted(rows, key=lambda t: t[3]):
        print(f"| {data} | {rho:g} | {c} | {n} | {m:+.2f} | [{lo:+.2f}, {hi:+.2f}] |")


if __name__ == "__main__":
    main()
