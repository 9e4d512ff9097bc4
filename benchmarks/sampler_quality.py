"""Each sampler's quality and speed on one checkpoint: the speed-up over the 1000-step DDPM
reference, at a stated quality cost.

Samples --samples-per-class images per class with each sampler from the same generator run, and
evaluates them with `cbdm-aug evaluate-generator` in one feature space (a classifier run folder,
by default the one benchmarks/generator_quality.py trained), against the same real images. The
wall time of sampling is measured here, around one call of `cbdm_aug.diffusion.sampling.sample`
per sampler on the same batch, so the speed column is a same-run ratio.

    python benchmarks/sampler_quality.py [--run runs/generator_quality/cbdm] [--samples-per-class 30]
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
from _env import environment  # noqa: E402

SAMPLERS = [("ddpm", 1000), ("ddim", 50), ("dpmpp", 20), ("dpmpp", 10), ("dpmpp-sde", 20), ("dpmpp-sde", 50)]


def cbdm_aug() -> str:
    exe = Path(sys.executable).with_name("cbdm-aug")
    return str(exe) if exe.exists() else "cbdm-aug"


def speed(run: Path, sampler: str, steps: int, guidance: float, n: int) -> float:
    """Images per second for one batch of ``n`` images."""
    import torch

    from cbdm_aug.diffusion.sampling import sample
    from cbdm_aug.generator.run_dir import load_generator

    gen = load_generator(run, device="cpu")
    labels = torch.arange(n) % gen.num_classes
    t0 = time.perf_counter()
    sample(gen.unet, labels, list(range(n)), image_size=gen.image_size, channels=gen.channels,
           null_class=gen.null_class, sampler=sampler, steps=steps, guidance=guidance, schedule=gen.schedule)
    return n / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(ROOT / "runs" / "generator_quality" / "cbdm"))
    p.add_argument("--data", default="../shared/datasets/mnist.npz")
    p.add_argument("--feature-net", default=str(ROOT / "runs" / "generator_quality" / "ddpm-eval" / "feature_net"))
    p.add_argument("--samples-per-class", type=int, default=30)
    p.add_argument("--real-per-class", type=int, default=200)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--speed-batch", type=int, default=100)
    p.add_argument("--work", default=str(ROOT / "runs" / "sampler_quality"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for sampler, steps in SAMPLERS:
        out = work / f"{sampler}{steps}"
        if not (out / "report.json").exists():
            cmd = [cbdm_aug(), "evaluate-generator", args.run, "--real", args.data, "--out", out,
                   "--samples-per-class", args.samples_per_class, "--real-per-class", args.real_per_class,
                   "--sampler", sampler, "--steps", steps, "--guidance", args.guidance,
                   "--feature-net", args.feature_net, "--batch-size", 250, "--quiet"]
            print("$", " ".join(map(str, cmd)), flush=True)
            subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)
        whole = json.loads((out / "report.json").read_text())["whole_set"]
        rows.append({"sampler": sampler, "steps": steps, **{k: whole[k] for k in ("fid", "kid", "precision", "recall")}})
    # Speed: interleave two rounds over the samplers on the same batch, keep the best of each.
    best = {}
    for _ in range(2):
        for sampler, steps in SAMPLERS:
            n = max(10, args.speed_batch // 10) if sampler == "ddpm" else args.speed_batch
            best[(sampler, steps)] = max(best.get((sampler, steps), 0), speed(Path(args.run), sampler, steps,
                                                                              args.guidance, n))
    ref = best[("ddpm", 1000)]
    for r in rows:
        r["images_per_sec"] = best[(r["sampler"], r["steps"])]
        r["speedup_vs_ddpm1000"] = r["images_per_sec"] / ref
    env = environment()
    results = Path(args.results)
    (results / "sampler_quality.json").write_text(json.dumps({"settings": vars(args), "rows": rows, **env}, indent=1))
    lines = [f"# Sampler speed and quality on one checkpoint ({args.run})", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores, {env['machine']['torch_threads']} "
             f"torch threads); torch {env['versions']['torch']}, diffusers {env['versions']['diffusers']}; commit {env['commit']}", "",
             f"Guidance {args.guidance}; {args.samples_per_class} samples per class against {args.real_per_class} real "
             "images per class, in the feature space of a classifier trained on real MNIST (numbers from other feature "
             "spaces are not comparable). Speed: one batch per sampler (ddpm: a tenth of the batch), best of 2 "
             "interleaved rounds, CPU.", "",
             "| sampler | steps | images/s | speed-up vs DDPM-1000 | FID | KID | precision | recall |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['steps']} | {r['images_per_sec']:.2f} | {r['speedup_vs_ddpm1000']:.0f}x | "
              f"{r['fid']:.2f} | {r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} |" for r in rows]
    lines += ["", "The default of `cbdm-aug generate` is dpmpp with 20 steps."]
    (results / "sampler_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
