"""The rare classes' decisions of `cbdm-aug run` with the proxies' images seen and unseen, side by side.

Each pair is two finished run folders on the same data: one whose proxies' images came from the run's own generator
(which saw the images they are judged on: an upper bound, the default before the fifth pass of issue 34), one whose
came from the generator fitted without them (``generator-unseen/``). For every class under 20 real images: its
decision (share of its places), the proxies' estimate of its own images' effect with its 95% interval, and, from each
run's report, its accuracy against its RandAugment twin. The two runs' generators differ too (the unseen one's run
goes on from the evidence generator), so the accuracies are two runs, not a paired comparison of the evidence alone.

    python benchmarks/proxy_decisions.py --pair alike=/tmp/time_alike3,/tmp/time_alike_unseen2 --tag proxy_decisions

Writes benchmarks/results/<tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

FEW = 20
ARM, TWIN = "randaugment+synthetic", "randaugment"


def rare_rows(run: Path) -> dict[str, dict]:
    """{class: decision, estimate, interval, unseen, accuracy difference against the twin} of a finished run."""
    rep = json.loads((run / "report.json").read_text())
    out = {}
    for name, n in rep["counts"].items():
        if n >= FEW:
            continue
        d = rep["decisions"][name]
        diff = np.subtract(rep["per_class"][ARM][name], rep["per_class"][TWIN][name])
        out[name] = {"real": n, "share": d["share"], "source": d["source"], "estimate": d.get("estimate"),
                     "lo": d.get("lo"), "hi": d.get("hi"), "unseen": "fitted without the images" in d["why"],
                     "vs_twin": round(float(diff.mean()), 2)}
    few = rep["paired"][f"{ARM}-{TWIN}"]["few"]
    return {"classes": out, "few": {k: few[k] for k in ("mean", "lo", "hi", "n")}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", action="append", required=True, help="NAME=SEEN_RUN,UNSEEN_RUN")
    p.add_argument("--tag", default="proxy_decisions")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    env = environment()
    pairs = {}
    for spec in args.pair:
        name, runs = spec.split("=", 1)
        seen, unseen = (Path(r) for r in runs.split(","))
        pairs[name] = {"seen_run": str(seen), "unseen_run": str(unseen), "seen": rare_rows(seen),
                       "unseen": rare_rows(unseen)}
    res = Path(args.results)
    (res / f"{args.tag}.json").write_text(json.dumps({**env, "pairs": pairs}, indent=1))

    def dec(r):
        iv = "" if r["estimate"] is None else f" {r['estimate']:+.1f} [{r['lo']:+.1f}, {r['hi']:+.1f}]"
        return f"{r['share']:g} ({r['source']}{iv})"

    lines = ["# Rare classes' decisions with the proxies' images seen and unseen", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             "`python benchmarks/proxy_decisions.py " + " ".join(f"--pair {s}" for s in args.pair) + "`. Decision: the "
             "share of its places its generated images may take, what decided it and the proxies' estimate of its own "
             "images' effect (points, 95%). 'vs twin': RandAugment + synthetic minus RandAugment on the class, mean over "
             "the run's seeds. Seen: the proxies' images from the run's generator, which saw the images they are judged "
             "on (an upper bound); unseen: from the generator fitted without them. Two runs a row: their generators "
             "differ as well, so 'vs twin' is not a paired comparison of the evidence alone.", "",
             "| data | class (real) | seen: decision | seen: vs twin | unseen: decision | unseen: vs twin |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, pr in pairs.items():
        for c, s in sorted(pr["seen"]["classes"].items(), key=lambda kv: kv[1]["real"]):
            u = pr["unseen"]["classes"][c]
            lines.append(f"| {name} | {c} ({s['real']}) | {dec(s)} | {s['vs_twin']:+.1f} | {dec(u)} | "
                         f"{u['vs_twin']:+.1f} |")
        fs, fu = pr["seen"]["few"], pr["unseen"]["few"]
        lines.append(f"| {name} | few-shot, RandAugment + synthetic - RandAugment | | {fs['mean']:+.1f} "
                     f"[{fs['lo']:+.1f}, {fs['hi']:+.1f}] | | {fu['mean']:+.1f} [{fu['lo']:+.1f}, {fu['hi']:+.1f}] |")
    (res / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
