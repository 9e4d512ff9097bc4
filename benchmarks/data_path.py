"""The classifier's two data paths on one finished tail_gain row: the batch path (``classify.device_data``, the CPU
default since the fourth pass of issue 34) against the host DataLoader path (``--no-device-data``, the default before).

The batch path draws the same sampler indices and the same augmentation in distribution, from other random streams,
so a row rerun on it moves by its seed noise. This measures whether it moves more: per path, the row's default arm
against its real-only twin (few-shot points, paired by seed), and each arm across the two paths (paired by seed).

    python benchmarks/data_path.py --work runs/tail_gain_rho1000_n5000_batchpath --seeds 5,6,7,8,9

Each arm is retrained from its own ``seed0/recipe.yaml`` under ``--work/arms`` (``--arm``, ``--twin``), into
``--work/pathcheck/<path>/<arm>``; a finished seed is reused, and a seed folder linked there from another run of the
same recipe on that path is read as it is (the results say which). Writes benchmarks/results/<tag>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

PATHS = ("device-data", "no-device-data")
NAMES = {"device-data": "batch path", "no-device-data": "DataLoader path"}


def train(recipe: Path, out: Path, seeds: list[int], path: str) -> None:
    todo = [s for s in seeds if not (out / f"seed{s}" / "metrics.json").is_file()]
    if todo:
        subprocess.run([sys.executable, "-c", "from cbdm_aug.cli import main; main()", "train-classifier", str(recipe),
                        "--out", str(out), "--seeds", ",".join(map(str, todo)), "--no-progress", "--overwrite",
                        f"--{path}"], check=True)


def _shown(p: Path) -> str:
    """``p`` relative to the repository where it is inside it."""
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def out_dir(work: Path, path: str, role: str, arms: dict) -> Path:
    return work / "pathcheck" / path / ("default" if role == "arm" else arms[role])


def few(out: Path, seeds: list[int], few_below: int) -> dict[int, float]:
    """{seed: few-shot accuracy %} (the mean recall of the classes under ``few_below`` real images)."""
    res = {}
    for s in seeds:
        m = json.loads((out / f"seed{s}" / "metrics.json").read_text())
        counts = np.asarray(m["train_counts"]["real"])
        pc = np.asarray(m["metrics"]["per_class"])
        res[s] = float(100 * pc[counts < few_below].mean())
    return res


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """b - a over the common seeds (``classify.paired``: mean and 95% t-interval), rounded for the results file."""
    from cbdm_aug.classify.paired import paired as t_paired

    seeds = sorted(set(a) & set(b))
    r = t_paired([b[s] for s in seeds], [a[s] for s in seeds])
    return {"n": r["n"], **{k: round(r[k], 2) for k in ("mean", "lo", "hi")},
            "per_seed": [round(x, 2) for x in r["per_seed"]]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="a tail_gain --work folder with finished arms")
    p.add_argument("--arm", default="cbdm-sqrt-a12-1200+w1+gate+floor0.5+evidence")
    p.add_argument("--twin", default="real-ra")
    p.add_argument("--seeds", default="5,6,7,8,9")
    p.add_argument("--few-below", type=int, default=20)
    p.add_argument("--tag", default="data_path_n5000")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    work, seeds = Path(args.work), [int(s) for s in args.seeds.split(",")]
    arms = {"twin": args.twin, "arm": args.arm}
    acc = {}
    for path in PATHS:
        for role, arm in arms.items():
            out = out_dir(work, path, role, arms)
            train(work / "arms" / arm / "seed0" / "recipe.yaml", out, seeds, path)
            acc[path, role] = few(out, seeds, args.few_below)
    rows = {f"{NAMES[path]}: arm - twin": paired(acc[path, "twin"], acc[path, "arm"]) for path in PATHS}
    rows |= {f"{role} ({arms[role]}): batch - DataLoader": paired(acc["no-device-data", role], acc["device-data", role])
             for role in arms}
    gap = {p: {s: acc[p, "arm"][s] - acc[p, "twin"][s] for s in seeds} for p in PATHS}
    rows["arm - twin: batch - DataLoader"] = paired(gap["no-device-data"], gap["device-data"])
    linked = {f"{path}/{role}": {s: str((out_dir(work, path, role, arms) / f"seed{s}").resolve()) for s in seeds
                                 if (out_dir(work, path, role, arms) / f"seed{s}").is_symlink()}
              for path in PATHS for role in arms}
    linked = {k: v for k, v in linked.items() if v}
    env = environment()
    doc = {**env, "work": str(work), "arms": arms, "seeds": seeds, "few_below": args.few_below,
           "few_shot": {f"{p}/{r}": v for (p, r), v in acc.items()}, "paired": rows, "linked": linked}
    res = Path(args.results)
    (res / f"{args.tag}.json").write_text(json.dumps(doc, indent=1))
    lines = [f"# The classifier's data paths on `{work.name}`: batch path against DataLoader path", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch "
             f"{env['versions']['torch']}; commit {commit_text(env)}", "",
             f"`python benchmarks/data_path.py --work {args.work} --seeds {args.seeds}`: the arm `{args.arm}` and its "
             f"twin `{args.twin}`, retrained from their recipes on each path, seeds {args.seeds}; few-shot accuracy "
             f"(classes under {args.few_below} real images), paired by seed, mean [95% t-interval]."
             + "".join(f" Seeds {', '.join(map(str, v))} of {k} were not retrained here: their folders link to "
                       f"`{_shown(Path(next(iter(v.values()))).parent)}`"
                       f" (runs of the same recipe on that path)." for k, v in linked.items()), "",
             "| comparison | seeds | few-shot points | per seed |", "| --- | --- | --- | --- |"]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['n']} | {r['mean']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}] | "
                     + ", ".join(f"{x:+.1f}" for x in r["per_seed"]) + " |")
    lines += ["", "Few-shot accuracy per seed (%):", "", "| path | arm | " + " | ".join(map(str, seeds)) + " |",
              "| --- | --- | " + " | ".join("---" for _ in seeds) + " |"]
    for (path, role), v in acc.items():
        lines.append(f"| {NAMES[path]} | {arms[role]} | " + " | ".join(f"{v[s]:.2f}" for s in seeds) + " |")
    (res / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
