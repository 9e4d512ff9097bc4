"""Two `cbdm-aug run`s on the same data that share the evidence generator (``generator-unseen/``) and differ only in
how the run's generator went on from it: from its weights alone (``--init-from``: Adam, the warm-up and the EMA
restarted) or with its optimiser, EMA and step (``--continue-from``). Everything downstream (cache, filter,
evidence, arms) was made anew by each run, with the same seeds.

    python benchmarks/continuation.py --pair cifar=/tmp/g_own2/runs/cifar10-500-3,/tmp/g_own3/runs/cifar10-500-3 \\
        --pair mnist=/tmp/g_own2/runs/mnist-300-3,/tmp/g_own3/runs/mnist-300-3 --tag continuation

Per pair: the images the filter kept per class (``cache/filtered.h5``), RandAugment + synthetic against its
RandAugment twin in each run (few-shot and every class under 20 real images), and the second run's RandAugment +
synthetic against the first's, paired by seed (the real-only twins are the same in both runs: same data, settings
and seeds; the file says whether they matched). Writes benchmarks/results/<tag>.{json,md}.

Any two runs that share their data, real-only arms and seeds compare the same way: ``--labels`` names the two runs
and ``--about`` says what differs (the title and the paragraph above the tables):

    python benchmarks/continuation.py --pair cifar=RUN_A,RUN_B --tag first_batch --labels "16 a class,a sixteenth" \
        --about "The cache stage's first batch: ..."
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


def kept(run: Path, names: list[str]) -> list[int]:
    from cbdm_aug.cache.reader import SyntheticCache

    with SyntheticCache(run / "cache" / "filtered.h5") as c:
        return np.bincount(np.asarray(c.labels), minlength=len(names)).tolist()


def one_pair(a: Path, b: Path) -> dict:
    from cbdm_aug.classify.paired import paired

    ra, rb = (json.loads((r / "report.json").read_text()) for r in (a, b))
    names = list(ra["counts"])
    rare = [n for n in names if ra["counts"][n] < FEW]
    row = {"runs": [str(a), str(b)], "counts": ra["counts"], "kept": [kept(a, names), kept(b, names)],
           "twins_equal": ra["per_seed"][TWIN] == rb["per_seed"][TWIN]}
    row["few_vs_twin"] = [paired(r["per_seed"][ARM]["few"], r["per_seed"][TWIN]["few"]) for r in (ra, rb)]
    row["few_b_minus_a"] = paired(rb["per_seed"][ARM]["few"], ra["per_seed"][ARM]["few"])
    row["rare"] = {n: {"vs_twin": [paired(r["per_class"][ARM][n], r["per_class"][TWIN][n]) for r in (ra, rb)],
                       "b_minus_a": paired(rb["per_class"][ARM][n], ra["per_class"][ARM][n]),
                       "share": [r["decisions"][n]["share"] for r in (ra, rb)]} for n in rare}
    row["balanced_vs_twin"] = [paired(r["per_seed"][ARM]["balanced"], r["per_seed"][TWIN]["balanced"]) for r in (ra, rb)]
    row["others"] = {n: [paired(r["per_class"][ARM][n], r["per_class"][TWIN][n]) for r in (ra, rb)]
                     for n in names if n not in rare}  # the classes of FEW images or more, each against its twin
    row["worst"] = [min(((n, float(np.mean(np.subtract(r["per_class"][ARM][n], r["per_class"][TWIN][n]))))
                         for n in names), key=lambda t: t[1]) for r in (ra, rb)]
    return row


def main(argv=None):
    from cbdm_aug.classify.paired import interval

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", action="append", required=True, help="NAME=RUN_INIT_FROM,RUN_CONTINUE_FROM")
    p.add_argument("--tag", default="continuation")
    p.add_argument("--labels", default="a, weights alone,b, whole state",
                   help="the two runs' names, comma-separated (each may hold one comma: split at the middle one)")
    p.add_argument("--about", default=None, help="title and paragraph, separated by '|', for another pair of runs")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    pairs = {}
    for spec in args.pair:
        name, runs = spec.split("=", 1)
        a, b = (Path(r) for r in runs.split(","))
        pairs[name] = one_pair(a, b)
    env = environment()
    res = Path(args.results)
    (res / f"{args.tag}.json").write_text(json.dumps({**env, "pairs": pairs}, indent=1))

    parts = args.labels.split(",")
    labels = (",".join(parts[:len(parts) // 2]).strip(), ",".join(parts[len(parts) // 2:]).strip())
    title, about = (args.about.split("|", 1) if args.about else (None, None))
    command = ("`python benchmarks/continuation.py " + " ".join(f"--pair {s}" for s in args.pair)
               + (f" --labels {args.labels!r} --about ..." if args.about else "") + "`. ")
    lines = ["# " + (title or "The run's generator after the evidence generator: its weights alone, or its whole state"),
             "", f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             command + (about.strip() + " Points, RandAugment + synthetic minus RandAugment, mean [95% t-interval] over "
                        "the paired seeds; b - a: the two runs' RandAugment + synthetic arms paired by seed." if about else
             "Both runs of a "
             "pair share the data, the first 80% of the generator's steps (`generator-unseen/`, the same files) and "
             "the seeds; the last 20% went on from its weights alone (`--init-from`: Adam, warm-up and EMA restarted; "
             "a) or with its optimiser, EMA and step (`--continue-from`; b). Cache, filter, evidence and arms were "
             "made anew by each. Points, RandAugment + synthetic minus RandAugment, mean [95% t-interval] over the "
             "paired seeds; b - a: the two runs' RandAugment + synthetic arms paired by seed."), ""]
    for name, r in pairs.items():
        names = list(r["counts"])
        lines += [f"## {name}", "", f"Real-only twins identical in both runs: {'yes' if r['twins_equal'] else 'no'}.",
                  "", "| images kept by the filter | " + " | ".join(f"{n} ({r['counts'][n]})" for n in names)
                  + " | total |", "| --- | " + " | ".join("---" for _ in names) + " | --- |"]
        for label, k in zip(labels, r["kept"]):
            lines.append(f"| {label} | " + " | ".join(str(v) for v in k) + f" | {sum(k)} |")
        lines += ["", f"| | {labels[0]} | {labels[1]} | b - a |", "| --- | --- | --- | --- |",
                  f"| few-shot vs twin | {interval(r['few_vs_twin'][0])} | {interval(r['few_vs_twin'][1])} | "
                  f"{interval(r['few_b_minus_a'])} |"]
        for n, c in sorted(r["rare"].items(), key=lambda kv: r["counts"][kv[0]]):
            lines.append(f"| {n} ({r['counts'][n]}) vs twin, share {c['share'][0]:g} / {c['share'][1]:g} | "
                         f"{interval(c['vs_twin'][0])} | {interval(c['vs_twin'][1])} | {interval(c['b_minus_a'])} |")
        if "others" in r:
            lines += [f"| {n} ({r['counts'][n]}) vs twin | {interval(v[0])} | {interval(v[1])} | |"
                      for n, v in sorted(r["others"].items(), key=lambda kv: r["counts"][kv[0]])]
            lines.append(f"| balanced accuracy vs twin | {interval(r['balanced_vs_twin'][0])} | "
                         f"{interval(r['balanced_vs_twin'][1])} | |")
        lines.append("| worst class vs twin | " + " | ".join(f"{w[0]} ({r['counts'][w[0]]}) {w[1]:+.1f}"
                                                          for w in r["worst"]) + " | |")
        lines.append("")
    (res / f"{args.tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
