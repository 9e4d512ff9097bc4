"""Training throughput of a CBDM step against a plain DDPM step, on the same model, batch and machine.

The CBDM regulariser needs the denoiser at a second label, so its step does twice the work of a
DDPM step: a time ratio of 2.0 is the floor. We run both branches as one forward pass on the
concatenated batch; the "two passes" row shows what running them separately would cost.

    python benchmarks/train_throughput.py                 # CPU: 'cpu' preset, 16x16, batch 64
    python benchmarks/train_throughput.py --device cuda --preset cifar-paper --image-size 32 --batch-size 128 --bf16
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

from cbdm_aug.diffusion.loss import CBDMLossConfig, cbdm_loss, ddpm_alpha_bar, target_distribution  # noqa: E402
from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE  # noqa: E402
from cbdm_aug.diffusion.unet import build_unet, unet_config  # noqa: E402


def two_pass_loss(unet, x0, y, alpha_bar, q, cfg, null_class):
    """The same objective with the y and y' branches as two separate forward passes."""
    n = len(x0)
    t = torch.randint(0, len(alpha_bar), (n,), device=x0.device)
    eps = torch.randn_like(x0)
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    keep = torch.rand(n, device=x0.device) >= cfg.p_uncond
    y_in = torch.where(keep, y, torch.full_like(y, null_class))
    y_p = torch.multinomial(q, n, replacement=True)
    e_y = unet(x_t, t, class_labels=y_in).sample
    e_p = unet(x_t, t, class_labels=y_p).sample
    mse = lambda a, b: (a - b).float().pow(2).mean(dim=(1, 2, 3))  # noqa: E731
    w = cfg.tau * t / len(alpha_bar) * keep
    return mse(e_y, eps) + w * (mse(e_y, e_p.detach()) + cfg.gamma * mse(e_y.detach(), e_p))


def measure(step, n_steps, warmup, sync):
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(n_steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (for GPUs; slower on these CPUs)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    unet = build_unet(unet_config(args.preset, args.image_size, args.channels, args.num_classes)).to(device).train()
    opt = torch.optim.Adam(unet.parameters(), lr=2e-4)
    alpha_bar = ddpm_alpha_bar(DEFAULT_SCHEDULE).to(device)
    counts = [int(5000 * 0.01 ** (i / (args.num_classes - 1))) for i in range(args.num_classes)]
    q = target_distribution("train", counts).float().to(device)
    x0 = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size, device=device) * 2 - 1
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def make_step(loss_fn):
        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                loss = loss_fn().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
        return step

    arms = {
        "ddpm (tau=0)": lambda: cbdm_loss(unet, x0, y, alpha_bar, q, CBDMLossConfig(tau=0.0), args.num_classes)["loss"],
        "cbdm, one batched pass": lambda: cbdm_loss(unet, x0, y, alpha_bar, q, CBDMLossConfig(), args.num_classes)["loss"],
        "cbdm, two passes": lambda: two_pass_loss(unet, x0, y, alpha_bar, q, CBDMLossConfig(), args.num_classes),
    }
    # Interleave the arms over rounds so machine noise hits them alike.
    rounds = {name: [] for name in arms}
    for _ in range(3):
        for name, fn in arms.items():
            rounds[name].append(measure(make_step(fn), max(1, args.steps // 3), args.warmup, sync))
    sec = {name: statistics.median(v) for name, v in rounds.items()}
    base = sec["ddpm (tau=0)"]
    rows = [{"arm": name, "sec_per_step": s, "images_per_sec": args.batch_size / s, "time_ratio_vs_ddpm": s / base}
            for name, s in sec.items()]
    result = {"benchmark": "train_throughput", "settings": vars(args), "rows": rows,
              "parameters_M": sum(p.numel() for p in unet.parameters()) / 1e6, **environment()}
    tag = f"train_throughput_{device.type}{'_bf16' if args.bf16 else ''}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Training throughput ({device.type}{', bf16' if args.bf16 else ''}): {args.preset} UNet "
             f"({result['parameters_M']:.2f}M params), {args.image_size}x{args.image_size}x{args.channels}, "
             f"batch {args.batch_size}", "",
             f"machine: {result['machine']['cpu']} ({result['machine']['cpu_count']} cores, "
             f"{result['machine']['torch_threads']} torch threads), gpu: {result['machine']['gpu']}; "
             f"torch {result['versions']['torch']}, diffusers {result['versions']['diffusers']}; commit {result['commit']}", "",
             "| arm | s/step | images/s | time ratio vs DDPM |", "|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['sec_per_step']:.3f} | {r['images_per_sec']:.1f} | {r['time_ratio_vs_ddpm']:.2f} |"
              for r in rows]
    lines += ["", "The floor for CBDM is 2.0: it evaluates the denoiser at two labels. Medians of 3 interleaved rounds."]
    (out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
