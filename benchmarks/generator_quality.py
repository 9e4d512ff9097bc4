"""Generator quality on the tail: plain DDPM (tau = 0) vs CBDM on MNIST-LT, side by side.

Fits two generators with the same model, steps, batch, learning rate and seed (only tau differs),
evaluates both with `cbdm-aug evaluate-generator` in ONE feature space (the classifier trained
during the first evaluation is reused for the second) and with the same sampler settings, and
writes a table of whole-set and tail metrics plus the grids of the three rarest classes to
benchmarks/results/.

Sized for 2 busy CPU cores by default (16x16, the 'cpu' UNet, 600 steps). Rerun bigger, e.g. on a
GPU: --steps 20000 --preset small --image-size 28 --samples-per-class 1000. Existing run folders
and evaluation folders under --runs are reused (a finished fit with the same step count is not
refitted; delete a folder to redo it).

    python benchmarks/generator_quality.py [--data ../shared/datasets/mnist.npz] [--steps 600]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

ARMS = {"ddpm": 0.0, "cbdm": 1.0}   # tau
WHOLE = [("fid", "FID", 2, "lower"), ("kid", "KID", 4, "lower"), ("precision", "precision", 3, "higher"),
         ("recall", "recall", 3, "higher"), ("near_copy_share", "near-copy share", 3, "lower")]


def cbdm_aug() -> str:
    exe = Path(sys.executable).with_name("cbdm-aug")
    return str(exe) if exe.exists() else "cbdm-aug"


def run(cmd: list, log: Path) -> None:
    print("$", " ".join(map(str, cmd)), flush=True)
    with open(log, "a") as f:
        subprocess.run(list(map(str, cmd)), check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def fit(arm: str, args, run_dir: Path) -> str:
    meta = run_dir / "generator.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        if m.get("finished") and m.get("step") == args.steps:
            return "reused"
    cmd = [cbdm_aug(), "fit-generator", args.data, "--out", run_dir, "--preset", args.preset,
           "--image-size", args.image_size, "--longtail", "exp", "--imbalance", args.imbalance,
           "--max-per-class", args.max_per_class, "--data-seed", 0, "--max-steps", args.steps,
           "--batch-size", args.batch_size, "--lr", args.lr, "--seed", args.seed, "--tau", ARMS[arm],
           "--sample-every", max(1, args.steps // 2), "--checkpoint-every", max(1, args.steps // 3),
           "--accelerator", args.accelerator]
    if (run_dir / "checkpoints").exists():
        cmd.append("--resume")
    t = time.time()
    run(cmd, run_dir.parent / f"{arm}.fit.log")
    return f"fitted in {time.time() - t:.0f} s"


def real_floor_cache(args, path: Path) -> Path:
    """A cache of real MNIST *test* images (the same count per class as the generated sets): the
    score a perfect generator would get against the reference set, for scale."""
    import numpy as np

    from cbdm_aug.cache.writer import write_cache
    from cbdm_aug.data import open_data
    from cbdm_aug.data.convert import convert_images

    if not path.exists():
        test = open_data(args.data, split="test")
        rng = np.random.default_rng(args.seed)
        idx = np.concatenate([rng.permutation(np.flatnonzero(test.labels == c))[:args.samples_per_class]
                              for c in range(test.num_classes)])
        write_cache(path, convert_images(test.images[idx], args.image_size, test.channels), test.labels[idx],
                    class_names=test.class_names, generator={"class_counts": None})
    return path


def evaluate(arm: str, args, run_dir: Path | None, out: Path, feature_net: Path | None, cache: Path | None = None) -> dict:
    if (out / "report.json").exists():
        return json.loads((out / "report.json").read_text())
    source = ["--cache", cache] if cache else [run_dir]
    cmd = [cbdm_aug(), "evaluate-generator", *source, "--real", args.data, "--test", args.data, "--out", out,
           "--longtail", "exp", "--imbalance", args.imbalance, "--max-per-class", args.max_per_class, "--data-seed", 0,
           "--samples-per-class", args.samples_per_class, "--real-per-class", args.samples_per_class,
           "--sampler", args.sampler, "--steps", args.sampling_steps, "--guidance", args.guidance,
           "--k", args.k, "--quiet"]
    if feature_net is not None:
        cmd += ["--feature-net", feature_net]
    run(cmd, out.parent / f"{arm}.eval.log")
    return json.loads((out / "report.json").read_text())


def fmt(v, d):
    return "-" if v is None else f"{v:.{d}f}"


def ratio(a, b):
    return "-" if a is None or b is None or a == 0 else f"{b / a:.2f}"


def table(reports: dict, floor: dict) -> str:
    d, c, f = reports["ddpm"], reports["cbdm"], floor
    lines = ["| metric | DDPM (tau=0) | CBDM (tau=1) | CBDM / DDPM | better | real test images (floor) |",
             "|---|---|---|---|---|---|"]
    for key, name, digits, better in WHOLE:
        lines.append(f"| whole set: {name} | {fmt(d['whole_set'][key], digits)} | {fmt(c['whole_set'][key], digits)} | "
                     f"{ratio(d['whole_set'][key], c['whole_set'][key])} | {better} | {fmt(f['whole_set'][key], digits)} |")
    if d.get("cas"):
        for key in ("top1", "balanced", "few"):
            lines.append(f"| CAS {key} | {fmt(d['cas'][key], 3)} | {fmt(c['cas'][key], 3)} | "
                         f"{ratio(d['cas'][key], c['cas'][key])} | higher | {fmt((f.get('cas') or {}).get(key), 3)} |")
    tail = ", ".join(d["tail"]["classes"])
    for key, name, digits, better in WHOLE[1:] + [("cas", "CAS", 3, "higher")]:
        if key in d["tail"]:
            lines.append(f"| tail ({tail}): {name} | {fmt(d['tail'][key], digits)} | {fmt(c['tail'][key], digits)} | "
                         f"{ratio(d['tail'][key], c['tail'][key])} | {better} | {fmt(f['tail'].get(key), digits)} |")
    return "\n".join(lines)


def rare_table(reports: dict, rare: list[int]) -> str:
    d, c = reports["ddpm"], reports["cbdm"]
    lines = ["| class (train images) | recall DDPM / CBDM | precision DDPM / CBDM | KID DDPM / CBDM | "
             "nn pixel dist DDPM / CBDM (train-train) | near-copies DDPM / CBDM | CAS DDPM / CBDM |",
             "|---|---|---|---|---|---|---|"]
    for i in rare:
        a, b = d["per_class"][i], c["per_class"][i]
        cas = (f"{fmt(d['cas']['per_class'][i], 3)} / {fmt(c['cas']['per_class'][i], 3)}" if d.get("cas") else "-")
        lines.append(f"| {a['class']} ({a['train_count']}) | {fmt(a['recall'], 3)} / {fmt(b['recall'], 3)} | "
                     f"{fmt(a['precision'], 3)} / {fmt(b['precision'], 3)} | {fmt(a['kid'], 4)} / {fmt(b['kid'], 4)} | "
                     f"{fmt(a['nn_pixel']['median'], 3)} / {fmt(b['nn_pixel']['median'], 3)} ({fmt(a['train_nn_median_pixel'], 3)}) | "
                     f"{100 * a['near_copy_share']:.0f}% / {100 * b['near_copy_share']:.0f}% | {cas} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "mnist.npz"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "generator_quality"), help="Run and evaluation folders.")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--imbalance", type=float, default=100)
    p.add_argument("--max-per-class", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--samples-per-class", type=int, default=200)
    p.add_argument("--sampler", default="dpmpp")
    p.add_argument("--sampling-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.0,
                   help="The same w for both arms, so only tau differs (the paper tunes 0.8 DDPM / 1.6 CBDM).")
    p.add_argument("--k", type=int, default=3)
    args = p.parse_args(argv)
    args.data = os.path.abspath(args.data)
    runs, results = Path(args.runs), Path(args.results)
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    fits = {arm: fit(arm, args, runs / arm) for arm in ARMS}
    # One feature space for every arm: the classifier the first evaluation trains (or trained).
    feature_net = runs / "ddpm-eval" / "feature_net"
    reports = {}
    for arm in ARMS:
        reports[arm] = evaluate(arm, args, runs / arm, runs / f"{arm}-eval",
                                feature_net if (feature_net / "model.pt").exists() else None)
    floor = evaluate("real", args, None, runs / "real-eval", feature_net,
                     cache=real_floor_cache(args, runs / "real-test-images.h5"))
    counts = reports["ddpm"]["real"]["train_counts"]
    rare = sorted(range(len(counts)), key=lambda i: counts[i])[:3]

    out = results / "generator_quality"
    out.mkdir(parents=True, exist_ok=True)
    for arm in ARMS:
        for i in rare:
            grid = next((runs / f"{arm}-eval" / "grids").glob(f"{i:03d}_*.png"))
            shutil.copy(grid, out / f"{arm}_{grid.name}")
        shutil.copy(runs / f"{arm}-eval" / "per_class.png", out / f"{arm}_per_class.png")
        shutil.copy(runs / f"{arm}-eval" / "report.json", out / f"{arm}_report.json")
        if (runs / arm / "samples" / "latest.png").exists():
            shutil.copy(runs / arm / "samples" / "latest.png", out / f"{arm}_training_samples.png")
    env = environment()
    fs = reports["ddpm"]["feature_space"]
    md = [
        f"# Generator quality on MNIST-LT (rho={args.imbalance:g}, n_max={args.max_per_class}): DDPM vs CBDM",
        "",
        f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores), gpu: {env['machine']['gpu']}; "
        f"torch {env['versions']['torch']}, diffusers {env['versions']['diffusers']}; commit {commit_text(env)}",
        "",
        f"Both arms: '{args.preset}' UNet at {args.image_size}x{args.image_size}, {args.steps} steps, batch "
        f"{args.batch_size}, lr {args.lr:g}, seed {args.seed}; only tau differs. Sampling: {args.sampler}, "
        f"{args.sampling_steps} steps, guidance {args.guidance:g}, {args.samples_per_class} images per class, "
        f"against {args.samples_per_class} real images per class (balanced MNIST train). Precision/recall k={args.k}.",
        f"Feature space (the same for both arms): {fs['description']}. {fs['note']}",
        "",
        table(reports, floor),
        "",
        "The floor column evaluates real MNIST test images (never seen by either generator) as if they were "
        "generated: the best a generator can score here. Its CAS is a classifier trained on those real images.",
        "",
        "The three rarest classes:",
        "",
        rare_table(reports, rare),
        "",
        "Grids (left: generated, right: the class's real training images): "
        + ", ".join(f"`{arm}_{i:03d}_*.png`" for arm in ARMS for i in rare) + ".",
        "",
        f"Fits: {fits}. Total wall time of this invocation: {time.time() - t0:.0f} s.",
        "",
    ]
    (out.parent / "generator_quality.md").write_text("\n".join(md))
    (out.parent / "generator_quality.json").write_text(json.dumps(
        {"args": vars(args), "env": env, "fits": fits, "rare_classes": rare,
         "reports": {arm: {k: r[k] for k in ("whole_set", "tail", "per_class", "cas", "feature_space")}
                     for arm, r in {**reports, "real-floor": floor}.items()}}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
