"""Sampling throughput of each sampler on one checkpoint, with the speed-up over 1000-step DDPM.

    python benchmarks/sampling_throughput.py [RUN_DIR] [--device cpu] [--batch-size 8]

Without RUN_DIR it builds a random-weight 'cpu'-preset UNet (16x16 RGB, 10 classes): throughput
does not depend on the weights. Images/s counts finished images, with classifier-free guidance
on (two branches per forward, as `generate` runs by default). Writes JSON and markdown to
benchmarks/results/. Quality per sampler is not measured yet (needs the evaluation module).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _env import commit_text, environment  # benchmarks/_env.py: machine, versions, commit

from cbdm_aug.cache.generate import SamplerSettings
from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE, sample

RESULTS = Path(__file__).parent / "results"
# (name, sampler, steps); the reference comes first, the `generate` default last.
DEFAULT = SamplerSettings()
CASES = [("ddpm-1000 (reference)", "ddpm", 1000), ("ddim-50", "ddim", 50), ("dpmpp-20", "dpmpp", 20),
         (f"default: {DEFAULT.sampler}-{DEFAULT.steps}", DEFAULT.sampler, DEFAULT.steps)]


def _model(run_dir, device):
    if run_dir:
        from cbdm_aug.generator.run_dir import load_generator

        g = load_generator(run_dir, device)
        return g.unet, g.num_classes, g.image_size, g.channels, g.schedule, str(run_dir), g.weights_sha256
    from cbdm_aug.diffusion.unet import build_unet, unet_config

    torch.manual_seed(0)
    unet = build_unet(unet_config("cpu", 16, 3, 10)).eval().requires_grad_(False).to(device)
    return unet, 10, 16, 3, DEFAULT_SCHEDULE, "random-weight 'cpu' preset, 16x16x3, 10 classes", None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--batches", type=int, default=2, help="timed batches per fast sampler")
    ap.add_argument("--ddpm-batches", type=int, default=1, help="timed batches for 1000-step DDPM")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each case keeps its best")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    ap.add_argument("--guidance", type=float, default=DEFAULT.guidance)
    ap.add_argument("--out", default=None, help="result file stem [default: sampling_throughput_<device>]")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    unet, num_classes, size, channels, schedule, model_desc, sha = _model(args.run_dir, device)
    b = args.batch_size
    labels = torch.arange(b, device=device) % num_classes

    def run(sampler, steps, batch_index):
        seeds = list(range(batch_index * b, (batch_index + 1) * b))
        sample(unet, labels, seeds, image_size=size, channels=channels, null_class=num_classes,
               sampler=sampler, steps=steps, guidance=args.guidance, schedule=schedule)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run("dpmpp", 5, 0)  # warm-up: kernels, allocator, scheduler construction
    # Cases run interleaved in rounds and each keeps its best round, so a burst of load from
    # other processes on a shared machine does not land on one sampler only.
    best = {}
    for round_ in range(args.rounds):
        for name, sampler, steps in CASES:
            n_batches = args.ddpm_batches if sampler == "ddpm" and steps >= 1000 else args.batches
            t0 = time.perf_counter()
            for i in range(n_batches):
                run(sampler, steps, i)
            dt = time.perf_counter() - t0
            print(f"round {round_}  {name:28s} {n_batches * b / dt:10.2f} img/s  "
                  f"({n_batches * b} images in {dt:.1f} s)", flush=True)
            if name not in best or dt < best[name]["seconds"]:
                best[name] = {"name": name, "sampler": sampler, "steps": steps, "images": n_batches * b,
                              "seconds": round(dt, 3), "images_per_s": round(n_batches * b / dt, 3)}
    rows = [best[name] for name, _, _ in CASES]
    ref = rows[0]["images_per_s"]
    for r in rows:
        r["speedup_vs_ddpm1000"] = round(r["images_per_s"] / ref, 1)

    env = environment()
    result = {
        "benchmark": "sampling_throughput", "model": model_desc, "weights_sha256": sha,
        "device": str(device), "batch_size": b, "guidance": args.guidance, **env,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / (args.out or f"sampling_throughput_{device.type}")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m, v = env["machine"], env["versions"]
    md = [f"# Sampling throughput ({device}, {m['gpu'] or m['cpu']})", "",
          f"Model: {model_desc}; batch {b}; guidance {args.guidance:g} (both branches in one forward); "
          f"best of {args.rounds} interleaved rounds.",
          f"Machine: {m['platform']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads; "
          f"torch {v['torch']}, diffusers {v['diffusers']}; commit {commit_text(env)}.", "",
          "| sampler | steps | images | images/s | speed-up vs DDPM-1000 |", "| --- | ---: | ---: | ---: | ---: |"]
    md += [f"| {r['name']} | {r['steps']} | {r['images']} | {r['images_per_s']:.2f} | {r['speedup_vs_ddpm1000']}x |"
           for r in rows]
    md += ["", "Quality per sampler on the same checkpoint: not measured yet (waits for the evaluation module)."]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
