"""Does synthetic data beat strong real-data baselines on the tail, and does CBDM beat DDPM as the
generator budget grows? MNIST-LT (rho = 100, n_max = 5000, 16x16 grey), official 10k test images.

Protocol (issue 11):
- every arm trains the same classifier recipe (recipes/mnist-lt-*.yaml: resnet8_cifar, SGD, cosine,
  1-pixel shifts) over the same --seeds (at least 5); the statistic is the paired difference to the
  control real-cb (same seed: same initialisation and the same real-image draws where the arms
  share them), with a 95% t-interval;
- real-cb is the control: the +synthetic arms' class-balanced sampler on real images only;
  real-ra adds a RandAugment policy to it, the strong real-only augmentation baseline; real-bs
  (Balanced Softmax) is the loss-side baseline (plain cross-entropy without re-sampling is far
  behind both: benchmarks/results/e2e_quality.md);
- oracle tops every class up to --top-up with *real* MNIST images the long-tailed split left out:
  the same counts as the +synthetic arms, so (arm - real-cb) / (oracle - real-cb) is the share of
  the gap that the generated images close;
- real-cb-2x doubles the epochs of real-cb: if it moves real-cb by less than the seed spread,
  the classifiers have converged;
- generators: `benchmarks/_ladder.py` snapshots of one DDPM (tau = 0) and one CBDM (tau = 1) run at
  each budget in --budgets (only tau differs); each tops every class up to --top-up with
  dpmpp-sde 20 steps, guidance --guidance, is filtered (`filter-cache`, confidence 0.5 and
  near-copies, one shared filter classifier); each generator is scored by `evaluate-generator` on
  --eval-per-class fresh samples a class in that classifier's feature space (tail KID, tail recall,
  tail CAS);
- lever arms on one snapshot (--lever-gen): unfiltered, the feature-distance filter, loss weight 1
  vs 0.3, cRT, Balanced Softmax with the sampled prior, a stronger guidance and classifier-feedback
  guidance (the filter classifier's entropy).

    python benchmarks/tail_gain.py [--seeds 0,1,2,3,4] [--budgets 600,2400,4800] [--jobs 2]

Everything lands in --work (default runs/tail_gain) and is reused when rerun; results go to
benchmarks/results/tail_gain.{md,json} and tail_gain_*.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment  # noqa: E402
from e2e_quality import MNIST_LT, cbdm_aug, run  # noqa: E402

from cbdm_aug.cache.reader import is_complete  # noqa: E402
from cbdm_aug.classify.paired import paired  # noqa: E402 - the protocol's statistic, shared with `cbdm-aug run`

FEW = [c for c, n in enumerate(MNIST_LT) if n < 200]
LT = ["--longtail", "exp", "--imbalance", "100", "--max-per-class", "5000", "--data-seed", "0"]
def oracle_npz(data: str, top_up: int, out: Path) -> Path:
    """MNIST-LT with every class topped up to ``top_up`` by real training images the long-tailed
    split did not take (the same long-tail view as the recipes: exp, rho 100, n_max 5000, seed 0)."""
    if out.exists():
        return out
    from cbdm_aug.data import make_longtail, open_data

    full = open_data(data, split="train")
    lt = make_longtail(full, "exp", 100.0, 5000, 0)
    # make_longtail keeps a subset of the full set: find which, by content, to add only unseen images
    key = lambda im: im.tobytes()  # noqa: E731
    taken = {key(im) for im in lt.images}
    rng = np.random.default_rng(0)
    xs, ys = [lt.images], [lt.labels]
    for c, n in enumerate(np.bincount(lt.labels, minlength=10)):
        if n >= top_up:
            continue
        pool = [i for i in np.flatnonzero(full.labels == c) if key(full.images[i]) not in taken]
        pick = rng.choice(pool, top_up - n, replace=False)
        xs.append(full.images[pick])
        ys.append(full.labels[pick])
    test = np.load(data)
    np.savez(out, x_train=np.concatenate(xs), y_train=np.concatenate(ys), x_test=test["x_test"],
             y_test=test["y_test"])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str((ROOT / "../shared/datasets/mnist.npz").resolve()))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--budgets", default="600,2400,4800")
    p.add_argument("--gens", default="ddpm,cbdm")
    p.add_argument("--gen-runs", default=str(ROOT / "runs" / "budget_curve" / "gens"))
    p.add_argument("--extra-gens", default="", help="more snapshots to score (generator metrics and one arm), "
                   "e.g. cbdm-minsnr5-600 (a run fitted with the since-removed --min-snr-gamma 5)")
    p.add_argument("--top-up", type=int, default=500, help="real + synthetic images per class")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--strong-guidance", type=float, default=3.0, help="guidance of a lever arm; <= 0: no arm")
    p.add_argument("--synthetic-weight", type=float, default=0.3)
    p.add_argument("--feedback-scale", type=float, default=0.2,
                   help="classifier-feedback guidance for the lever arm (the filter classifier's entropy); <= 0: no arm")
    p.add_argument("--eval-per-class", type=int, default=50, help="generated images per class for the generator metrics")
    p.add_argument("--cas-epochs", type=int, default=40, help="epochs of the CAS classifier on the eval samples")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--jobs", type=int, default=2, help="classifier runs at a time (each on one thread)")
    p.add_argument("--only", default=None, help="comma-separated arm names to run (the rest must exist to report)")
    p.add_argument("--big-top-up", type=int, default=0,
                   help="> 0: also top --big-gen up to this many images a class (the sampler draws each synthetic "
                        "image at most once an epoch, so the cache size bounds the synthetic share), with its oracle")
    p.add_argument("--big-gen", default="cbdm-4800")
    p.add_argument("--no-levers", action="store_true")
    p.add_argument("--report-only", action="store_true", help="run nothing; report what --work holds")
    p.add_argument("--lever-gen", default="cbdm-2400", help="the snapshot whose cache the lever arms vary")
    p.add_argument("--work", default=str(ROOT / "runs" / "tail_gain"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="tail_gain")
    args = p.parse_args(argv)

    work = Path(args.work)
    (work / "caches").mkdir(parents=True, exist_ok=True)
    log = work / "benchmark.log"
    t0 = time.time()
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    recipes = ROOT / "recipes"
    base, bs, syn = (recipes / f"mnist-lt-{n}.yaml" for n in ("baseline", "balanced-softmax", "synthetic"))
    common = [f"data.train={args.data}", f"schedule.epochs={args.epochs}"]

    # --- the shared filter classifier and feature space (trained once on the real long-tailed split) ---
    counts = {str(c): max(0, args.top_up - n) for c, n in enumerate(MNIST_LT)}
    counts_file = work / "topup_counts.json"
    counts_file.write_text(json.dumps(counts))
    filt_cls = work / "filter_classifier"
    if not (filt_cls / "model.pt").exists() and not args.report_only:
        run([cbdm_aug(), "train-classifier", base, "--out", filt_cls, "--no-progress", "--overwrite",
             "--set", f"data.train={args.data}", "--set", "sampling.mode=class-balanced"], log)

    locks: dict[str, threading.Lock] = {}
    guard = threading.Lock()

    def once(path: Path, make) -> Path:
        """Make ``path`` unless it is complete; one thread at a time per file."""
        with guard:
            lock = locks.setdefault(str(path), threading.Lock())
        with lock:
            if not is_complete(path):
                make()
        return path

    if args.big_top_up:
        big_counts = work / f"topup{args.big_top_up}_counts.json"
        big_counts.write_text(json.dumps({str(c): max(0, args.big_top_up - n) for c, n in enumerate(MNIST_LT)}))

    def cache(gen: str, guidance: float | None = None, feedback: float = 0.0, big: bool = False) -> Path:
        guidance = args.guidance if guidance is None else guidance
        name = gen + ("" if guidance == args.guidance else f"-g{guidance:g}") + (f"-fb{feedback:g}" if feedback > 0 else "")
        name += f"-top{args.big_top_up}" if big else ""
        out = work / "caches" / f"{name}.h5"
        fb = ["--feedback-classifier", filt_cls, "--feedback-scale", feedback] if feedback > 0 else []
        return once(out, lambda: run([cbdm_aug(), "generate", Path(args.gen_runs) / gen, "--out", out, "--counts-file",
                                      big_counts if big else counts_file, "--sampler", "dpmpp-sde", "--steps", 20, "--guidance", guidance,
                                      "--seed", 0, "--batch-size", 256, "--device", "cpu", *fb], log))

    def filtered(src: Path, feature_quantile: float | None = None) -> Path:
        out = src.with_name(src.stem + ("-filtered" if feature_quantile is None else f"-feat{feature_quantile:g}") + ".h5")
        extra = [] if feature_quantile is None else ["--feature-quantile", feature_quantile, "--confidence", 0]
        return once(out, lambda: run([cbdm_aug(), "filter-cache", src, "--out", out, "--real", args.data, *LT,
                                      "--classifier", filt_cls, *extra, "--quiet", "--overwrite"], log))

    def metrics_of(gen: str) -> Path:
        # A balanced sample of the generator (a top-up cache has no head-class images to compare)
        out = work / "eval" / gen
        if not (out / "report.json").exists():
            run([cbdm_aug(), "evaluate-generator", Path(args.gen_runs) / gen, "--real", args.data, *LT,
                 "--test", args.data, "--feature-net", filt_cls, "--out", out, "--samples-per-class",
                 args.eval_per_class, "--sampler", "dpmpp-sde", "--steps", 20, "--guidance", args.guidance,
                 "--seed", 0, "--batch-size", 250, "--device", "cpu", "--quiet",
                 # CAS trains on the eval samples alone (10 x eval_per_class images): 4 epochs would be ~16 steps
                 "--cas-epochs", args.cas_epochs], log)
        return out / "report.json"

    gens = [f"{g}-{b}" for b in budgets for g in args.gens.split(",")]
    extra = [g for g in args.extra_gens.split(",") if g]
    snapshot_ready = lambda g: (Path(args.gen_runs) / g / "generator.json").exists()  # noqa: E731

    # --- tasks, in priority order; a worker takes the first whose generator snapshot exists ---
    sw = f"loss.synthetic_weight={args.synthetic_weight}"
    oracle = work / "oracle.npz" if args.report_only else oracle_npz(args.data, args.top_up, work / "oracle.npz")
    arms = {
        "real-bs": (bs, lambda: []),
        "real-cb": (base, lambda: ["sampling.mode=class-balanced"]),
        "real-cb-2x": (base, lambda: ["sampling.mode=class-balanced", f"schedule.epochs={2 * args.epochs}"]),
        "real-ra": (base, lambda: ["sampling.mode=class-balanced", "data.augment=randaugment"]),
        # the oracle's epoch has the control's 12,406 draws, not one per image of its larger set
        "oracle": (base, lambda: ["sampling.mode=class-balanced", f"data.train={oracle}", "data.longtail=none",
                                  f"sampling.num_samples={sum(MNIST_LT)}"]),
    }
    needs = {n: None for n in arms}
    lever_budget = int(args.lever_gen.rsplit("-", 1)[1])
    for g in sorted(gens, key=lambda g: (int(g.rsplit("-", 1)[1]) != lever_budget, int(g.rsplit("-", 1)[1]), g)):
        arms[g] = (syn, lambda g=g: [f"sampling.cache={filtered(cache(g))}", sw])
        needs[g] = g
    best = args.lever_gen
    if not args.no_levers:
        available = [max(n, args.top_up) for n in MNIST_LT]
        levers = {
            f"{best}-w1": lambda: [f"sampling.cache={filtered(cache(best))}"],
            f"{best}-featfilter": lambda: [f"sampling.cache={filtered(cache(best), 0.95)}", sw],
            f"{best}-crt": lambda: [f"sampling.cache={filtered(cache(best))}", sw, "schedule.crt_epochs=2"],
            f"{best}-bs": lambda: [f"sampling.cache={filtered(cache(best))}", sw, "loss.kind=balanced-softmax",
                                   "loss.prior=sampled",
                                   "sampling.target=" + ",".join(f"{a / sum(available):.6f}" for a in available)],
        }
        if args.feedback_scale > 0:
            levers[f"{best}-feedback"] = lambda: [f"sampling.cache={filtered(cache(best, feedback=args.feedback_scale))}", sw]
        levers[f"{best}-unfiltered"] = lambda: [f"sampling.cache={cache(best)}", sw]
        if args.strong_guidance > 0:
            levers[f"{best}-g{args.strong_guidance:g}"] = lambda: [f"sampling.cache={filtered(cache(best, args.strong_guidance))}", sw]
        for n, sets in levers.items():
            arms[n] = (syn, sets)
            needs[n] = best
    if args.big_top_up:
        big, k = args.big_gen, args.big_top_up
        big_oracle = work / f"oracle{k}.npz"
        arms[f"oracle-top{k}"] = (base, lambda: ["sampling.mode=class-balanced", f"data.train={oracle_npz(args.data, k, big_oracle)}",
                                                 "data.longtail=none", f"sampling.num_samples={sum(MNIST_LT)}"])
        arms[f"{big}-top{k}"] = (syn, lambda: [f"sampling.cache={filtered(cache(big, big=True))}", sw])
        arms[f"{big}-top{k}-w1"] = (syn, lambda: [f"sampling.cache={filtered(cache(big, big=True))}"])
        needs |= {f"oracle-top{k}": None, f"{big}-top{k}": big, f"{big}-top{k}-w1": big}
    only = set(args.only.split(",")) if args.only else None

    def train(name):
        recipe, sets = arms[name]
        cmd = [cbdm_aug(), "train-classifier", recipe, "--out", work / "arms" / name, "--seeds", args.seeds,
               "--no-progress", "--overwrite"]
        for s in common + sets():
            cmd += ["--set", s]
        run(cmd, log, env={**os.environ, "OMP_NUM_THREADS": "1"})

    tasks = []  # (name, needs snapshot, function)
    for n in arms:
        if not (work / "arms" / n / "aggregate.json").exists() and (only is None or n in only):
            tasks.append((n, needs[n], lambda n=n: train(n)))
        if n in gens and (only is None or f"metrics:{n}" in only or n in only):
            tasks.append((f"metrics:{n}", n, lambda n=n: metrics_of(n)))
    tasks += [(f"metrics:{g}", g, lambda g=g: metrics_of(g)) for g in extra]
    pending, failed = ([] if args.report_only else list(tasks)), []

    def worker():
        while True:
            with guard:
                if not pending:
                    return
                pick = next((t for t in pending if t[1] is None or snapshot_ready(t[1])), None)
                if pick is not None:
                    pending.remove(pick)
            if pick is None:
                time.sleep(20)  # waiting for a generator snapshot (benchmarks/_ladder.py)
                continue
            print(f"[{time.strftime('%H:%M:%S')}] start {pick[0]}", flush=True)
            try:
                pick[2]()
                print(f"[{time.strftime('%H:%M:%S')}] done {pick[0]}", flush=True)
            except Exception as e:  # noqa: BLE001 - report it and go on with the other tasks
                failed.append(pick[0])
                print(f"[{time.strftime('%H:%M:%S')}] FAILED {pick[0]}: {e}", flush=True)

    t1 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(args.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t_all = time.time() - t1
    metrics = {g: _gen_metrics(work / "eval" / g / "report.json") for g in gens + extra
               if (work / "eval" / g / "report.json").exists()}
    report(args, arms, metrics, gens, extra, seeds, budgets, work, t_all, failed)


def _gen_metrics(path: Path) -> dict:
    r = json.loads(path.read_text())
    return {"tail_kid": r["tail"]["kid"], "tail_recall": r["tail"]["recall"], "tail_precision": r["tail"]["precision"],
            "tail_cas": r["tail"]["cas"], "cas_balanced": r["cas"]["balanced"], "fid": r["whole_set"]["fid"],
            "per_class_kid": {c["class"]: c["kid"] for c in r["per_class"]}}


def report(args, arms, metrics, gens, extra, seeds, budgets, work, t_all, failed):
    from cbdm_aug.classify.report import compare_plot, compare_table, load_run

    names = [n for n in arms if (work / "arms" / n / "aggregate.json").exists()]
    runs = {n: load_run(work / "arms" / n) for n in names}
    per_seed = {}
    for n in names:
        rows = [json.loads((work / "arms" / n / f"seed{s}" / "metrics.json").read_text())["metrics"]["per_class"]
                for s in seeds]
        # groups by the long-tailed split's counts for every arm (the oracle's own counts would move
        # its tail classes to 'medium'): few = classes 7, 8, 9 (< 200 real images)
        per_seed[n] = {"few": [100 * float(np.mean([r[c] for c in FEW])) for r in rows],
                       "balanced": [100 * float(np.mean(r)) for r in rows]}
    ctrl = per_seed["real-cb"]  # the control every arm is paired with
    stats = {}
    for n in names:
        stats[n] = {k: paired(per_seed[n][k], ctrl[k]) for k in ("few", "balanced")}
        stats[n]["few_mean"], stats[n]["few_std"] = float(np.mean(per_seed[n]["few"])), float(np.std(per_seed[n]["few"], ddof=1))
        ref = f"oracle-top{args.big_top_up}" if f"-top{args.big_top_up}" in n else "oracle"  # same counts as the arm
        g_n = np.mean(per_seed[ref]["few"]) - np.mean(ctrl["few"]) if ref in per_seed else float("nan")
        stats[n]["gap_closed"] = stats[n]["few"]["mean"] / g_n if g_n > 0 else float("nan")

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    compare_plot([runs[n] for n in names if n in ("real-cb", "real-ra", "oracle", f"cbdm-{max(budgets)}", f"ddpm-{max(budgets)}")],
                 results / f"{args.tag}_per_class.png")
    budget_plot(args, stats, metrics, budgets, results / f"{args.tag}_budget.png")
    env = environment()
    fmt = lambda s: f"{s['mean']:+.2f} [{s['lo']:+.2f}, {s['hi']:+.2f}]"  # noqa: E731
    lines = [f"# Tail gain on MNIST-LT (rho=100, n_max=5000, 16x16), seeds {args.seeds}", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
             f"commit {env['commit']}{' (dirty tree)' if env['dirty_tree'] else ''}", "",
             f"Classifier: recipes/mnist-lt-*.yaml, resnet8_cifar, {args.epochs} epochs of 12,406 draws, 1-pixel shifts on every "
             f"arm. Synthetic arms: every class topped up to {args.top_up} images (dpmpp-sde 20 steps, guidance {args.guidance:g}), "
             f"filtered (confidence 0.5, near-copies), synthetic loss weight {args.synthetic_weight:g}, the class-balanced sampler "
             "of real-cb.", "",
             "Paired difference to real-cb (same seeds), mean and 95% t-interval, in accuracy points. "
             "Gap closed = few-shot gain / (oracle - real-cb), with the oracle of the same image counts "
             f"(oracle: every class topped up to {args.top_up} real images; oracle-topN: to N).", "",
             "| arm | few-shot acc | few vs real-cb | balanced vs real-cb | gap closed |",
             "| --- | --- | --- | --- | --- |"]
    for n in names:
        s = stats[n]
        lines.append(f"| {n} | {s['few_mean']:.2f} ± {s['few_std']:.2f} | {fmt(s['few'])} | {fmt(s['balanced'])} | "
                     f"{s['gap_closed']:.2f} |")
    lines += ["", f"## Generators at each budget ({args.eval_per_class} unfiltered samples a class; the filter classifier's "
              "feature space)", "",
              "| generator | FID | tail KID | tail recall | tail precision | tail CAS | CAS balanced |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for g in [g for g in gens + extra if g in metrics]:
        m = metrics[g]
        lines.append(f"| {g} | {m['fid']:.3f} | {m['tail_kid']:.4f} | {m['tail_recall']:.3f} | {m['tail_precision']:.3f} | "
                     f"{m['tail_cas']:.3f} | {m['cas_balanced']:.3f} |")
    rare = [str(c) for c in range(9, 4, -1)]
    lines += ["", "Per-class KID (same feature space), the five rarest classes:", "",
              "| generator | " + " | ".join(f"KID '{c}'" for c in rare) + " |", "| --- |" + " --- |" * len(rare)]
    for g in [g for g in gens + extra if g in metrics]:
        lines.append(f"| {g} | " + " | ".join(f"{metrics[g]['per_class_kid'][c]:.3f}" for c in rare) + " |")
    import h5py

    kept = {}
    for g in gens + extra:
        if (work / "caches" / f"{g}-filtered.h5").exists():
            with h5py.File(work / "caches" / f"{g}-filtered.h5") as f:
                rec = json.loads(f.attrs["filter"])
            kept[g] = {"kept": rec["kept"], "before": rec["before"]}
    lines += ["", "Filter: share of generated images kept, classes 9 / 8 / 7 (the few-shot ones): " + "; ".join(
        f"{g} " + " / ".join(f"{kept[g]['kept'][c] / max(1, kept[g]['before'][c]):.2f}" for c in ("9", "8", "7"))
        for g in kept), "",
        f"![budget]({args.tag}_budget.png)", "", f"![per class]({args.tag}_per_class.png)", "",
        f"Time: {t_all / 60:.1f} min for the tasks this run did (caches, filters, classifier arms, generator metrics; "
        "what --work already held was reused and is not timed)." + (f" Failed: {', '.join(failed)}." if failed else "")]
    record = {"benchmark": "tail_gain", "settings": vars(args), "arms": {n: [str(arms[n][0].name), arms[n][1]] for n in names},
              "per_seed": per_seed, "paired_vs_real_cb": stats, "generator_metrics": metrics, "filter_kept": kept,
              "aggregate": {n: runs[n] for n in names}, **env}
    (results / f"{args.tag}.json").write_text(json.dumps(record, indent=1, default=str))
    (results / f"{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def budget_plot(args, stats, metrics, budgets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for g, colour in (("ddpm", "tab:blue"), ("cbdm", "tab:red")):
        bb = [b for b in budgets if f"{g}-{b}" in metrics]
        for ax, key, label in zip(axes[:3], ("tail_kid", "tail_recall", "tail_cas"),
                                  ("tail KID (lower is better)", "tail recall", "tail CAS")):
            ax.plot(bb, [metrics[f"{g}-{b}"][key] for b in bb], "o-", color=colour, label=g)
            ax.set_title(label)
        bb = [b for b in bb if f"{g}-{b}" in stats]
        if bb:
            m = [stats[f"{g}-{b}"]["few"] for b in bb]
            axes[3].errorbar(bb, [x["mean"] for x in m], yerr=[[x["mean"] - x["lo"] for x in m], [x["hi"] - x["mean"] for x in m]],
                             fmt="o-", color=colour, capsize=3, label=g)
    axes[3].axhline(0, color="grey", lw=0.8)
    if "oracle" in stats:
        axes[3].axhline(stats["oracle"]["few"]["mean"], color="green", ls="--", lw=0.8, label="oracle")
    if "real-ra" in stats:
        axes[3].axhline(stats["real-ra"]["few"]["mean"], color="purple", ls=":", lw=0.8, label="real-ra")
    axes[3].set_title("few-shot acc. vs real-cb (95% CI)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("generator steps")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
