"""`cbdm-aug run` at its defaults on long-tailed image folders built here from two sources, each with a
class of 3 images (issue 26's "folders of your own"): what a new user would get, with the worst class.

- mnist-300-3: MNIST, 28x28 grey PNG, 10 classes on the exp profile 300 -> 3 (735 images, like the
  held-out letters folder), the class order shuffled so the rarest class is not digit 9;
- cifar10-500-3: the CIFAR-10 JPEG copy, 32x32 RGB, 500 -> 3 (1,146 images);
- mnist-300-3-alike: MNIST 300 -> 3 as the first, but its 3-image class is the 9 and its two largest are the 4
  and the 7, the digits a 9 is most often taken for: a rare class with visually close, well-fed neighbours;
- mnist-lt-3000, mnist-lt-5000: issue 34's MNIST-LT rows (rho=1000, n_max 3000 and 5000: 3000 ... 13, 6, 3 and
  5000 ... 10, 5 images, digit 0 the largest, 9 the rarest, as `tail_gain.py` cuts them) as a folder, so the row is
  measured through `cbdm-aug run` itself, at its default, rather than through `tail_gain.py`'s arms;
each with a balanced test folder (--test-per-class images a class from the official test split).

    python benchmarks/own_folders.py --folders mnist-300-3,cifar10-500-3

Folders and runs go to --work (default $TMPDIR/cbdm-own-folders; data is never committed); rerunning
reuses every finished stage of each run. Each run's report.json is summarised into
benchmarks/results/own_folders.{md,json}: few-shot accuracy per arm, the paired differences, every class
under 20 real images against its twin (mean [95% interval] over the seeds) and the worst class.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402
from e2e_quality import cbdm_aug, run  # noqa: E402

SHARED = (ROOT / ".." / "shared" / "datasets").resolve()
FOLDERS = {"mnist-300-3": ("mnist", 300, 3), "cifar10-500-3": ("cifar10", 500, 3),
           "mnist-300-3-alike": ("mnist", 300, 3), "mnist-lt-3000": ("mnist", 3000, 3),
           "mnist-lt-5000": ("mnist", 5000, 5)}
ORDERS = {"mnist-300-3-alike": (4, 7, 0, 1, 2, 3, 5, 6, 8, 9),  # largest class first, the middle ones in label order
          "mnist-lt-3000": tuple(range(10)), "mnist-lt-5000": tuple(range(10))}  # tail_gain's order


def profile(n_max: int, n_min: int, C: int = 10) -> list[int]:
    """The exp profile from n_max down to n_min over C classes."""
    return [int(n_max * (n_min / n_max) ** (i / (C - 1))) for i in range(C)]


def _write_mnist(root: Path, counts: list[int], per_test: int, order: np.ndarray) -> None:
    from PIL import Image

    z = np.load(SHARED / "mnist.npz")
    rng = np.random.default_rng(0)
    for split, x, y, n_of in (("train", z["x_train"], z["y_train"], lambda r: counts[r]),
                              ("test", z["x_test"], z["y_test"], lambda r: per_test)):
        for rank, c in enumerate(order):
            d = root / split / str(c)
            d.mkdir(parents=True, exist_ok=True)
            for i in rng.choice(np.flatnonzero(y == c), n_of(rank), replace=False):
                Image.fromarray(x[i, :, :, 0]).save(d / f"{i:05d}.png")


def _write_cifar(root: Path, counts: list[int], per_test: int, order: np.ndarray, scratch: Path) -> None:
    src = scratch / "cifar10"
    if not (src / "test").is_dir():
        with tarfile.open(SHARED / "cifar10-jpeg.tar.gz") as t:
            t.extractall(scratch, filter="data")
    names = sorted(p.name for p in (src / "train").iterdir())
    rng = np.random.default_rng(0)
    for split, n_of in (("train", lambda r: counts[r]), ("test", lambda r: per_test)):
        for rank, c in enumerate(order):
            files = sorted((src / split / names[c]).iterdir())
            d = root / split / names[c]
            d.mkdir(parents=True, exist_ok=True)
            for i in rng.choice(len(files), n_of(rank), replace=False):
                shutil.copy(files[i], d / files[i].name)


def build(name: str, work: Path, per_test: int) -> Path:
    """WORK/NAME/{train,test}/<class>/..., written once (a marker file says it is complete)."""
    source, n_max, n_min = FOLDERS[name]
    root = work / name
    if (root / ".complete").exists():
        return root
    counts = profile(n_max, n_min)
    order = (np.array(ORDERS[name]) if name in ORDERS
             else np.random.default_rng(1).permutation(10))  # which class is the rarest: not the last label
    if source == "mnist":
        _write_mnist(root, counts, per_test, order)
    else:
        _write_cifar(root, counts, per_test, order, work)
    (root / ".complete").write_text(json.dumps({"counts": dict(zip(map(int, order), counts))}))
    return root


def summarise(name: str, variant: str, report: dict, few_below: int = 20) -> dict:
    """The figures issue 26 reads from one run's report.json: few-shot per arm, each + synthetic arm against its
    twin (few-shot and per class under ``few_below`` real images), the worst class and the decisions."""
    from cbdm_aug.classify.paired import paired

    counts = report["counts"]
    small = sorted((c for c in counts if counts[c] < few_below), key=lambda c: counts[c])
    twins = {}
    for arm, twin in report["twins"].items():
        per = report["per_class"]
        twins[f"{arm}-{twin}"] = {
            "few": report["paired"][f"{arm}-{twin}"].get("few"),
            "per_class": {c: paired(per[arm][c], per[twin][c]) | {"n_real": counts[c]} for c in small}}
    return {"folder": name, "variant": variant, "counts": counts,
            "few_shot": {a: v.get("few") for a, v in report["per_seed"].items()},
            "best_real_only": report["best_real_only"], "best_synthetic": report["best_synthetic"],
            "twins": twins, "worst_class": report.get("worst_class"),
            "decisions": {c: {k: e[k] for k in ("used", "judged", "net", "why")}
                          for c, e in (report.get("decisions") or {}).items()}}


def _ci(d: dict) -> str:
    return f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"


def _against_default(r: dict, rows: list[dict]) -> list[str]:
    """For a variant other than the default: each + synthetic arm's few-shot accuracy, default minus this variant,
    paired over the seeds (both share the data, generator, cache and real-only arms)."""
    from cbdm_aug.classify.paired import paired

    base = next((d for d in rows if d["folder"] == r["folder"] and d["variant"] == "default"), None)
    if r["variant"] == "default" or base is None:
        return []
    arms = [a for a in r["few_shot"] if a.endswith("+synthetic") and a in base["few_shot"]]
    return ["", *(f"Default minus {r['variant']}, {a}, few-shot: "
                  f"{_ci(paired(base['few_shot'][a], r['few_shot'][a]))}." for a in arms)]


def markdown(rows: list[dict], env: dict) -> str:
    lines = ["# `cbdm-aug run` on long-tailed folders of our own, each with a 3-image class", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             "`python benchmarks/own_folders.py`: each folder through `cbdm-aug run` at the CPU defaults (16x16, "
             "1200 generator steps; the seeds and the test images a class under each folder), then the + synthetic "
             "arms retrained on the "
             "same cache under each mixing variant. Points of accuracy, + synthetic arm minus its real-only twin, "
             "mean [95% t-interval] over the paired seeds.", ""]
    for r in rows:
        small = sorted(next(iter(r["twins"].values()))["per_class"], key=lambda c: r["counts"][c])
        seeds = len(next(iter(r["few_shot"].values())) or []) if r["few_shot"] else 0
        lines += [f"## {r['folder']}, {r['variant']}", "", f"{seeds} seeds; test: {r.get('test_per_class')} images a class.", "",
                  "| pair | few-shot | " + " | ".join(f"{c} ({r['counts'][c]})" for c in small) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in small) + " |"]
        for pair, t in r["twins"].items():
            lines.append(f"| {pair} | {_ci(t['few']) if t['few'] else ''} | "
                         + " | ".join(_ci(t["per_class"][c]) for c in small) + " |")
        lines += _against_default(r, rows)
        w = r["worst_class"]
        if w:
            lines += ["", f"Worst class: {w['class']} ({w['n_real']} real images) "
                      + (_ci(w) if w["lo"] is not None else f"{w['mean']:+.1f}") + f" with {w['arm']} against {w['twin']}."]
        if r["decisions"]:
            lines += ["", "Decisions:", "", *(f"- {e['why']}" for e in r["decisions"].values() if e["why"])]
        lines.append("")
    return "\n".join(lines)


VARIANTS = {  # name: the extra `cbdm-aug run` options; each reuses the default run's data, generator and cache
    "default": [],                                          # the real floor and the per-class evidence
    "floor-only": ["--no-evidence"],                        # the real floor alone
    "no-floor": ["--min-real-share", "0", "--no-evidence"],  # neither: the mixing before issue 26
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folders", default=",".join(FOLDERS))
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "cbdm-own-folders"))
    p.add_argument("--test-per-class", type=int, default=500)
    p.add_argument("--tag", default="own_folders", help="results file stem")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--report-only", action="store_true", help="summarise the runs --work holds")
    p.add_argument("--seeds", default=None, help="`cbdm-aug run --seeds` (default: run's own, 0,1,2)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in [f for f in args.folders.split(",") if f]:
        root = build(name, work, args.test_per_class)
        base = work / "runs" / name
        variants = [v for v in args.variants.split(",") if v]
        if (base / "report.json").exists():  # copy the finished stages before the default run moves on
            variants = [v for v in variants if v != "default"] + ["default"] * ("default" in variants)
        for variant in variants:
            k = list(VARIANTS).index(variant)
            out = base if k == 0 else work / "runs" / f"{name}-v{k}"
            if not args.report_only:
                if k and not out.exists() and (base / "report.json").exists():
                    shutil.copytree(base, out, ignore=shutil.ignore_patterns(".lock*"))  # the same generator and cache
                t = time.time()
                run([cbdm_aug(), "run", root / "train", "--test", root / "test", "--out", out, "--no-progress",
                     *(["--seeds", args.seeds] if args.seeds else []), *VARIANTS[variant]], work / f"{name}.log", env={**os.environ})
                print(f"{name}, {variant}: {time.time() - t:.0f} s", flush=True)
            if (out / "report.json").exists():
                rows.append(summarise(name, variant, json.loads((out / "report.json").read_text()))
                            | {"test_per_class": len(list(next((root / "test").iterdir()).iterdir()))})
    res = Path(args.results)
    env = environment()
    from tail_gain import default_arm  # run's default in tail_gain's words: tests/test_tail_gain_script.py reads it

    (res / f"{args.tag}.json").write_text(json.dumps({**env, "default_arm": default_arm(), "rows": rows}, indent=1))
    (res / f"{args.tag}.md").write_text(markdown(rows, env))
    print(markdown(rows, env))


if __name__ == "__main__":
    main()
