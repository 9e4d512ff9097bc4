"""How long `cbdm-aug run` takes, stage by stage (issue 34, item 4: at most 20 minutes on a 740-image, 10-class folder
on 2 cores). Runs `cbdm-aug run DATA --test TEST --out OUT` at the defaults into a fresh OUT, timed from outside, then
reads each stage's own seconds from OUT/stages/*.json. Run it on an otherwise idle machine: every other process
slows the stages it overlaps.

    python benchmarks/run_time.py /tmp/g_own/mnist-300-3-alike/train --test /tmp/g_own/mnist-300-3-alike/test \\
        --out /tmp/time_alike --tag run_time_alike
    # a run already finished in OUT (timed by an earlier call of this script's command): read its stages only
    python benchmarks/run_time.py DATA --test TEST --out /tmp/time_alike --read-only --tag run_time_alike

Writes benchmarks/results/<tag>.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

STAGES = ("data", "generator", "cache", "evidence", "control", "randaugment", "control+synthetic",
          "randaugment+synthetic")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--read-only", action="store_true", help="read a finished OUT; run nothing")
    p.add_argument("--wall-seconds", type=float, help="with --read-only: the wall clock an earlier timed call measured")
    p.add_argument("--tag", default="run_time")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    out = Path(args.out)
    wall = args.wall_seconds if args.read_only else None
    if not args.read_only:
        if out.exists():
            raise SystemExit(f"run_time: {out} exists; give a fresh --out (a reused stage is not timed)")
        t0 = time.time()
        subprocess.run(["cbdm-aug", "run", args.data, "--test", args.test, "--out", str(out), "--no-progress"],
                       check=True)
        wall = round(time.time() - t0, 1)
    seconds = {}
    for s in STAGES:
        rec = json.loads((out / "stages" / f"{s}.json").read_text())
        if rec.get("status") != "done":
            raise SystemExit(f"run_time: stage {s} of {out} is not done")
        seconds[s] = rec["seconds"]
    report = json.loads((out / "report.json").read_text())
    env = environment()
    total = sum(seconds.values())
    res = {"data": args.data, "out": str(out), "images": sum(report["counts"].values()),
           "classes": len(report["counts"]), "stage_seconds": seconds, "stages_total_seconds": round(total, 1),
           "wall_seconds": wall}
    lines = [f"# `cbdm-aug run`, stage by stage: `{args.data}`", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             f"`python benchmarks/run_time.py`: `cbdm-aug run` at the defaults on {res['images']} images in "
             f"{res['classes']} classes, a fresh `--out`; each stage's seconds from its own record.", "",
             "| stage | minutes | share |", "| --- | --- | --- |"]
    lines += [f"| {s} | {v / 60:.1f} | {100 * v / total:.0f}% |" for s, v in seconds.items()]
    lines += [f"| all stages | **{total / 60:.1f}** | |", ""]
    if wall is not None:
        lines += [f"Wall clock of the command: {wall / 60:.1f} min.", ""]
    if args.read_only:
        lines += ["Read from a finished run with `--read-only`: the commit above is the reading's; the run was timed "
                  "by an earlier call of this script, at the commit its first results file named.", ""]
    rare = _rare_classes(out / "per_class.csv")
    res["verdict"], res["rare_classes"] = report["verdict"], rare
    lines += ["What the run answered (report.json `verdict`):", "", f"> {report['verdict']}", "",
              "Classes under 20 real images, mean accuracy over the seeds (per_class.csv):", "",
              "| class | real | RandAugment | RandAugment + synthetic | difference |", "| --- | --- | --- | --- | --- |",
              *(f"| {r['class']} | {r['real']} | {r['RandAugment']:.1f} | {r['RandAugment + synthetic']:.1f} | "
                f"{r['difference']:+.1f} |" for r in rare), ""]
    res_dir = Path(args.results)
    (res_dir / f"{args.tag}.json").write_text(json.dumps({**env, **res}, indent=1))
    (res_dir / f"{args.tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _rare_classes(path: Path, under: int = 20) -> list[dict]:
    """The run's classes under ``under`` real images: RandAugment and RandAugment + synthetic, and the difference."""
    import csv

    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if int(r["real train"]) < under:
                a, b = float(r["RandAugment"]), float(r["RandAugment + synthetic"])
                rows.append({"class": r["class"], "real": int(r["real train"]), "RandAugment": a,
                             "RandAugment + synthetic": b, "difference": round(b - a, 2)})
    return rows


if __name__ == "__main__":
    main()
