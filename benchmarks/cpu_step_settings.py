"""What two CPU settings do to a generator training step: the UNet's memory layout (contiguous or channels-last)
and OpenMP's wait policy (libgomp's default short spin, or PASSIVE: sleep at once), on an idle machine and beside
one other busy process.

The step is the one `cbdm-aug run` trains on a CPU: the 'cpu' UNet at 16x16 with augmentation conditioning,
batch 64, the CBDM loss (both branches in one pass), gradient clipping, Adam and the EMA update. Each setting runs
in its own process (OpenMP reads its policy once, when torch loads it); the busy neighbour is a pure-Python loop
on one core. Order is interleaved and repeated, so a drift of the machine's speed shows as spread, not as an effect.

    python benchmarks/cpu_step_settings.py            # about 5 minutes on 2 cores
    python benchmarks/cpu_step_settings.py --steps 5 --repeats 1 --tag cpu_step_settings_smoke

Writes benchmarks/results/<tag>.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402

CHILD = r"""
import sys, time, torch
from dataclasses import asdict
from cbdm_aug.diffusion.augment import AUGMENT_DIM, AugmentConfig
from cbdm_aug.diffusion.loss import CBDMLossConfig, cbdm_loss
from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
from cbdm_aug.diffusion.unet import unet_config
from cbdm_aug.generator.module import CBDMModule
layout, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
aug = AugmentConfig.for_data(0.12, flips=False)
m = CBDMModule(unet_config("cpu", 16, 1, 10, augment_dim=AUGMENT_DIM), [300, 200, 150, 100, 60, 40, 13, 8, 5, 3],
               asdict(CBDMLossConfig()), DEFAULT_SCHEDULE, lr=1e-3, warmup_steps=120, augment=aug.to_dict())
if layout == "channels_last":
    m.unet.to(memory_format=torch.channels_last)
opt = torch.optim.Adam(m.unet.parameters(), lr=1e-3)
images = torch.randint(0, 256, (64, 16, 16, 1), dtype=torch.uint8)
labels = torch.randint(0, 10, (64,))
def step(i):
    x0, cond = m.pixel_x0(images)
    loss = cbdm_loss(m.unet, x0, labels, m.alpha_bar, m.q_target, m.loss_cfg, m.null_class, augment=cond)["loss"].mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.unet.parameters(), 1.0)
    opt.step()
    m.ema.update(m.unet, step=i)
for i in range(3):
    step(i)
t = time.perf_counter()
for i in range(steps):
    step(i)
print((time.perf_counter() - t) / steps)
"""

LAYOUTS = ("contiguous", "channels_last")
POLICIES = ("default", "PASSIVE")


def one(layout: str, policy: str, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, layout, str(steps)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per process")
    p.add_argument("--repeats", type=int, default=2, help="processes per setting and load")
    p.add_argument("--tag", default="cpu_step_settings")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)

    times: dict[str, list[float]] = {}
    for load in ("idle", "busy"):
        neighbour = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None)
        try:
            for r in range(args.repeats):
                for layout in (LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]):
                    for policy in (POLICIES if r % 2 == 0 else POLICIES[::-1]):
                        s = one(layout, policy, args.steps)
                        times.setdefault(f"{load}|{layout}|{policy}", []).append(s)
                        print(f"{load:4} {layout:13} {policy:7} {s:.3f} s/step", flush=True)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["idle|contiguous|PASSIVE"]  # what every CPU step ran as before this benchmark
    rows = []
    for key, value in med.items():
        load, layout, policy = key.split("|")
        rows.append(f"| {load} | {layout} | {policy} | {value:.3f} | {' / '.join(f'{t:.3f}' for t in times[key])} | "
                    f"{base / value:.2f}x |")
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    env = environment()
    md = [f"# A CBDM training step on the CPU: memory layout and OpenMP wait policy ({args.tag})", "",
          f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores); torch {env['versions']['torch']}; "
          f"commit {commit_text(env)}", "",
          f"`python benchmarks/cpu_step_settings.py --steps {args.steps} --repeats {args.repeats}`: the 'cpu' UNet, "
          "16x16, batch 64, augmentation-conditioned, CBDM loss, clipping, Adam, EMA; seconds a step, median over "
          "processes; busy = one other process spinning on one core. Speed-up is against idle, contiguous, PASSIVE "
          "(every CPU step before this benchmark).", "",
          "| load | layout | wait policy | s/step (median) | each process | speed-up |",
          "| --- | --- | --- | --- | --- | --- |", *rows, ""]
    (res / f"{args.tag}.md").write_text("\n".join(md))
    (res / f"{args.tag}.json").write_text(json.dumps({"env": env, "steps": args.steps,
                                                      "repeats": args.repeats, "seconds_per_step": times,
                                                      "median": med, "time": time.strftime("%Y-%m-%d %H:%M:%S")},
                                                     indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
