"""Fit one generator in stages and keep a frozen copy of its sampling files at each budget.

    python benchmarks/_ladder.py NAME --budgets 600,1200,2400,4800 [--tau 1] [--imbalance 100] [--max-per-class 5000]
        [more fit-generator options, e.g. --balance-power 0.5 --augment 0.12]

The run grows with ``fit-generator --resume --max-steps B``; the warm-up is fixed (--warmup-steps),
so the copy at budget B is what a B-step run with that warm-up gives (up to the data order, which a
resume redraws). Copies land in ``--work/NAME-B`` (generator.json, ema.safetensors, run.json,
samples/latest.png). Rerunning continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_quality import cbdm_aug  # noqa: E402

from cbdm_aug.atomic import atomic_dir  # noqa: E402


def step_of(run: Path) -> int:
    meta = run / "generator.json"
    return json.loads(meta.read_text()).get("step", 0) if meta.exists() else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--budgets", default="600,1200,2400,4800")
    p.add_argument("--tau", default="1")
    p.add_argument("--data", default="../shared/datasets/mnist.npz")
    p.add_argument("--imbalance", default="100", help="rho of the exp long-tail view")
    p.add_argument("--max-per-class", default="5000", help="n_max of the exp long-tail view")
    p.add_argument("--work", default=str(ROOT / "runs" / "budget_curve" / "gens"))
    args, extra = p.parse_known_args(argv)  # anything else goes to fit-generator as it is
    args.extra = [e for e in extra if e != "--"]
    work = Path(args.work)
    live = work / args.name
    for b in [int(x) for x in args.budgets.split(",")]:
        snap = work / f"{args.name}-{b}"
        if (snap / "generator.json").exists():
            continue
        if step_of(live) < b:
            cmd = [cbdm_aug(), "fit-generator", args.data, "--out", live, "--preset", "cpu", "--image-size", 16,
                   "--longtail", "exp", "--imbalance", args.imbalance, "--max-per-class", args.max_per_class, "--data-seed", 0,
                   "--max-steps", b, "--batch-size", 64, "--lr", "1e-3", "--warmup-steps", 60, "--seed", 0,
                   "--tau", args.tau, "--accelerator", "cpu", "--sample-every", 600, "--checkpoint-every", 300,
                   *args.extra, *(["--resume"] if (live / "run.json").exists() else [])]
            print("$", " ".join(map(str, cmd)), flush=True)
            subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)
        assert step_of(live) == b, f"{live} is at step {step_of(live)}, expected {b}"
        with atomic_dir(snap) as tmp:  # a copy is whole or absent, so a rerun trusts what it finds
            for f in ("generator.json", "ema.safetensors", "run.json"):
                shutil.copy2(live / f, tmp / f)
            (tmp / "samples").mkdir()
            if (live / "samples" / "latest.png").exists():
                shutil.copy2(live / "samples" / "latest.png", tmp / "samples" / "latest.png")
        print(f"snapshot {snap} at step {b}", flush=True)


if __name__ == "__main__":
    main()
