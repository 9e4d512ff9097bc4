"""End-to-end quality on MNIST-LT: does synthetic data raise few-shot accuracy, and by more than the
seeds' spread?

MNIST-LT: rho = 100, n_max = 5000 (12,406 training images) from mnist.npz, tested on the official
10,000 test images. Five arms, each over --seeds:

  1. real-ce        real only, cross-entropy                      (recipes/mnist-lt-baseline.yaml)
  2. real-bs        real only, Balanced Softmax                   (recipes/mnist-lt-balanced-softmax.yaml)
     real-cb        real only, the synthetic arms' uniform class-balanced sampler (re-sampling control)
  3. ddpm-ce        real + DDPM synthetic (tau = 0), cross-entropy (recipes/mnist-lt-synthetic.yaml)
  4. cbdm-ce        real + CBDM synthetic, cross-entropy
  5. cbdm-bs        real + CBDM synthetic + Balanced Softmax; the sampler draws classes in proportion
                    to real + synthetic images and the loss's prior is what it draws (loss.prior=sampled),
                    so Balanced Softmax corrects only the imbalance the synthetic images leave

The generators of arms 3-5 share model, steps and seed; only tau differs. They are the run folders
of benchmarks/generator_quality.py (fitted here with the same settings if missing), so the generator
metrics in benchmarks/results/generator_quality.md describe exactly these generators. Each cache tops
every class up to --top-up images (real + synthetic), from the same sampler settings.

    python benchmarks/e2e_quality.py [--data ../shared/datasets/mnist.npz] [--seeds 0,1,2] [--top-up 1000]

Ablation (default on): ddpm-ce-filtered and cbdm-ce-filtered train on each cache after
`cbdm-aug filter-cache` (a classifier trained on the long-tailed real split must give an image's
class probability >= --filter-confidence). Existing caches and arm folders under --work are reused;
delete one to redo it.
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

from cbdm_aug.cache.reader import is_complete  # noqa: E402

MNIST_LT = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def cbdm_aug() -> str:
    exe = Path(sys.executable).with_name("cbdm-aug")
    return str(exe) if exe.exists() else "cbdm-aug"


def run(cmd: list, log: Path, env: dict | None = None) -> None:
    cmd = [str(c) for c in cmd]
    print("$", " ".join(cmd), flush=True)
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def ensure_generator(arm: str, tau: float, args, log: Path) -> Path:
    run_dir = Path(args.gen_runs) / arm
    meta = run_dir / "generator.json"
    if meta.exists() and json.loads(meta.read_text()).get("finished"):
        return run_dir
    run([cbdm_aug(), "fit-generator", args.data, "--out", run_dir, "--preset", "cpu", "--image-size", 16,
         "--longtail", "exp", "--imbalance", 100, "--max-per-class", 5000, "--data-seed", 0,
         "--max-steps", args.gen_steps, "--batch-size", 64, "--lr", "1e-3", "--seed", 0, "--tau", tau,
         "--accelerator", "cpu", *(["--resume"] if (run_dir / "run.json").exists() else [])], log)
    return run_dir


def ensure_cache(arm: str, run_dir: Path, args, work: Path, log: Path) -> Path:
    counts = {str(c): max(0, args.top_up - n) for c, n in enumerate(MNIST_LT)}
    counts_file = work / "topup_counts.json"
    counts_file.write_text(json.dumps(counts))
    out = work / f"{arm}{_suffix(args)}.h5"
    if not is_complete(out):
        run([cbdm_aug(), "generate", run_dir, "--out", out, "--counts-file", counts_file, "--sampler", args.sampler,
             "--steps", args.sample_steps, "--guidance", args.guidance, "--seed", 0, "--batch-size", 256,
             "--device", "cpu"], log)
    return out


def _suffix(args) -> str:
    """Caches and synthetic arms of a non-original sampler setting get its name, so both coexist."""
    return "" if (args.sampler, args.sample_steps) == ("dpmpp", 20) else f"-{args.sampler}{args.sample_steps}"


def ensure_filtered(cache: Path, args, log: Path) -> Path:
    out = cache.with_name(cache.stem + "-filtered.h5")
    if not is_complete(out):
        run([cbdm_aug(), "filter-cache", cache, "--out", out, "--real", args.data, "--longtail", "exp",
             "--imbalance", 100, "--max-per-class", 5000, "--data-seed", 0, "--confidence",
             args.filter_confidence, "--quiet", "--overwrite"], log)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/datasets/mnist.npz")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--top-up", type=int, default=1000, help="real + synthetic images per class after the top-up")
    p.add_argument("--gen-runs", default=str(ROOT / "runs" / "generator_quality"))
    p.add_argument("--gen-steps", type=int, default=600)
    p.add_argument("--sampler", default="dpmpp")
    p.add_argument("--gens", default="ddpm,cbdm", help="which generators' synthetic arms to run")
    p.add_argument("--skip-bs", action="store_true", help="skip the cbdm-bs arm")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--work", default=str(ROOT / "runs" / "e2e_quality"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="e2e_quality")
    p.add_argument("--filter-confidence", type=float, default=0.5,
                   help="filter-cache confidence for the *-filtered arms (negative: skip those arms)")
    args = p.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "benchmark.log"
    t0 = time.time()
    wanted = args.gens.split(",")
    gens = {arm: ensure_generator(arm, tau, args, log) for arm, tau in (("ddpm", 0.0), ("cbdm", 1.0)) if arm in wanted}
    caches = {arm: ensure_cache(arm, gens[arm], args, work, log) for arm in gens}
    t_gen = time.time() - t0

    available = [max(n, args.top_up) for n in MNIST_LT]
    weights = ",".join(f"{a / sum(available):.6f}" for a in available)
    recipes = ROOT / "recipes"
    data = [f"data.train={args.data}"]
    x = _suffix(args)
    arms = {
        "real-ce": (recipes / "mnist-lt-baseline.yaml", []),
        "real-bs": (recipes / "mnist-lt-balanced-softmax.yaml", []),
        # the control the synthetic arms need: the same uniform class-balanced sampler, real images only
        "real-cb": (recipes / "mnist-lt-baseline.yaml", ["sampling.mode=class-balanced"]),
    }
    for g in gens:
        arms[f"{g}-ce{x}"] = (recipes / "mnist-lt-synthetic.yaml", [f"sampling.cache={caches[g]}"])
    if "cbdm" in gens and not args.skip_bs:
        arms[f"cbdm-bs{x}"] = (recipes / "mnist-lt-synthetic.yaml", [f"sampling.cache={caches['cbdm']}",
                                                                      "loss.kind=balanced-softmax", "loss.prior=sampled",
                                                                      f"sampling.target={weights}"])
    if args.filter_confidence >= 0:  # the ablation: drop synthetic images a real-data classifier rejects
        for g in gens:
            filtered = ensure_filtered(caches[g], args, log)
            arms[f"{g}-ce-filtered{x}"] = (recipes / "mnist-lt-synthetic.yaml", [f"sampling.cache={filtered}"])
    t1 = time.time()
    for name, (recipe, sets) in arms.items():
        out = work / "arms" / name
        if (out / "aggregate.json").exists():
            continue
        cmd = [cbdm_aug(), "train-classifier", recipe, "--out", out, "--seeds", args.seeds, "--no-progress",
               "--overwrite"]
        for s in data + sets:
            cmd += ["--set", s]
        run(cmd, log)
    t_cls = time.time() - t1

    from cbdm_aug.classify.report import compare_plot, compare_table, load_run

    runs = [load_run(work / "arms" / name) for name in arms]
    table = compare_table(runs)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    compare_plot(runs, results / f"{args.tag}_per_class.png")
    few = {r["name"]: (r["mean"]["few"], r["std"]["few"]) for r in runs}
    env = environment()
    record = {"benchmark": "e2e_quality", "settings": vars(args), "arms": {n: [str(a[0].name), a[1]] for n, a in arms.items()},
              "runs": runs, "few_shot": few, "seconds": {"generators_and_caches": t_gen, "classifiers": t_cls}, **env}
    (results / f"{args.tag}.json").write_text(json.dumps(record, indent=1, default=str))
    gq = results / "generator_quality.md"
    lines = [f"# End-to-end quality on MNIST-LT (rho=100, n_max=5000, official 10k test), seeds {args.seeds}", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {commit_text(env)}", "",
             f"Generators: 'cpu' UNet (1.06M), 16x16, {args.gen_steps} steps, batch 64, lr 1e-3, seed 0; DDPM = tau 0, "
             f"CBDM = tau 1, gamma 0.25, target train. Caches: every class topped up to {args.top_up} images with "
             f"{args.sampler} {args.sample_steps} steps, guidance {args.guidance}, seed 0. Classifier: "
             "recipes/mnist-lt-*.yaml (resnet8_cifar at 16x16, 4 epochs, 12,406 draws an epoch).", "",
             table, "",
             "Arms: real-ce = real only, cross-entropy; real-bs = real only, Balanced Softmax; real-cb = real only, "
             "the same uniform class-balanced sampler as the synthetic arms (tail images repeated), cross-entropy; ddpm-ce / cbdm-ce = "
             "real + DDPM / CBDM synthetic, uniform class-balanced sampling, cross-entropy; cbdm-bs = real + CBDM "
             "synthetic drawn in proportion to real + synthetic counts, Balanced Softmax with that prior"
             + (f"; ddpm-ce-filtered / cbdm-ce-filtered = the same on the cache after `cbdm-aug filter-cache` "
                "(drops images that a classifier trained on the long-tailed real split does not give their class "
                f"with probability >= {args.filter_confidence}, and near-copies)." if args.filter_confidence >= 0 else "."), "",
             f"Generator metrics of these two generators: [{gq.name}]({gq.name}).", "",
             f"Per-class accuracy: ![per class]({args.tag}_per_class.png)", "",
             f"Time: generators and caches {t_gen / 60:.1f} min, classifiers {t_cls / 60:.1f} min."]
    (results / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
