"""One part of ``benchmarks/gpu_check.sh`` per call, or the final table: GPU throughput of training,
fit-generator, sampling and classifier training, side by side on one machine.

    python benchmarks/gpu_check.py PART --out DIR [--dry]    # PART: train, fit, sample, classify, latent
    python benchmarks/gpu_check.py report --out DIR          # the table from the parts' JSON files

Each part writes DIR/PART.json (rows of arm, images/s, warm-up seconds, notes) as soon as each arm is
measured, so a part stopped by its time limit still reports the arms it finished. ``--dry`` runs
tiny sizes on the CPU, for the default tests; its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

PARTS = ("train", "fit", "sample", "classify", "latent")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Part:
    """Rows of one part, rewritten to DIR/PART.json after each arm."""

    def __init__(self, name: str, out: Path, settings: dict):
        self.path = out / f"{name}.json"
        self.result = {"part": name, "settings": settings, "rows": [], "status": "running", **environment()}
        self.save()

    def add(self, arm: str, images_per_sec: float | None, warmup_s: float | None = None, **notes):
        row = {"arm": arm, "images_per_sec": images_per_sec, "warmup_s": warmup_s, **notes}
        self.result["rows"].append(row)
        self.save()
        print(json.dumps(row), flush=True)

    def save(self):
        self.path.write_text(json.dumps(self.result, indent=2))


def _sizes(args):
    if args.dry:  # seconds on a CPU: only checks that every arm runs
        return {"preset": "tiny", "image_size": 8, "channels": 3, "classes": 10, "batch": 8, "steps": 2,
                "warmup": 1, "fit_steps": 4, "sample_images": 8, "sample_batch": 4, "sample_steps": 2,
                "cls_images": 64, "cls_model": "resnet8_cifar", "cls_batch": 16}
    return {"preset": "cifar-paper", "image_size": 32, "channels": 3, "classes": 10, "batch": 128, "steps": 30,
            "warmup": 5, "fit_steps": 1000, "sample_images": 2000, "sample_batch": 500, "sample_steps": 20,
            "cls_images": 12406, "cls_model": "resnet32_cifar", "cls_batch": 128}


def part_train(args, s, device, out):
    """Images/s of one optimizer step (loss, backward, clip, Adam): DDPM and CBDM at fp32 eager (the
    old step: torch's default Adam, the issue's baseline), bf16 eager and bf16 compiled (fused Adam,
    as fit-generator on CUDA); compile warm-up is the time of the first compiled steps."""
    from cbdm_aug.diffusion.loss import CBDMLossConfig, cbdm_loss, ddpm_alpha_bar, target_distribution
    from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
    from cbdm_aug.diffusion.unet import build_unet, unet_config

    part = Part("train", out, s)
    C, n = s["classes"], s["batch"]
    alpha_bar = ddpm_alpha_bar(DEFAULT_SCHEDULE).to(device)
    q = target_distribution("train", [int(5000 * 0.01 ** (i / (C - 1))) for i in range(C)]).float().to(device)
    x0 = torch.rand(n, s["channels"], s["image_size"], s["image_size"], device=device) * 2 - 1
    y = torch.randint(0, C, (n,), device=device)
    # Eager arms first, then CBDM compiled (the goal's arm), DDPM compiled last: a part stopped by its
    # time limit during a compile keeps the rows that matter most.
    arms = [(loss, tau, arm, bf16, compiled) for arm, bf16, compiled in (("fp32 eager", False, False),
                                                                        ("bf16 eager", True, False))
            for loss, tau in (("ddpm", 0.0), ("cbdm", 1.0))]
    arms += [("cbdm", 1.0, "bf16 compiled", True, True), ("ddpm", 0.0, "bf16 compiled", True, True)]
    for loss_name, tau, arm, bf16, compiled in arms:
        if compiled and args.dry:
            part.add(f"{loss_name}, {arm}", None, note="skipped in --dry (minutes of CPU compile)")
            continue
        torch.manual_seed(0)
        unet = build_unet(unet_config(s["preset"], s["image_size"], s["channels"], C)).to(device).train()
        net = torch.compile(unet, dynamic=False) if compiled else unet
        opt = torch.optim.Adam(unet.parameters(), lr=2e-4, fused=(device.type == "cuda" and bf16) or None)
        cfg = CBDMLossConfig(tau=tau)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = cbdm_loss(net, x0, y, alpha_bar, q, cfg, C)["loss"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()

        t0 = time.perf_counter()
        for _ in range(s["warmup"]):
            step()
        _sync(device)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(s["steps"]):
            step()
        _sync(device)
        dt = (time.perf_counter() - t0) / s["steps"]
        part.add(f"{loss_name}, {arm}", n / dt, warm if compiled else None, ms_per_step=1000 * dt)
        del unet, net, opt
    part.result["status"] = "done"
    part.save()


def part_fit(args, s, device, out):
    """``fit-generator`` end to end (data load, compile, every callback): wall time of the whole
    call, and the steady rate between step 10% and the last step."""
    import tempfile

    import numpy as np

    from cbdm_aug.generator import module as M
    from cbdm_aug.generator.fit import DataConfig, FitConfig, TrainConfig, fit

    part = Part("fit", out, s)
    marks = {}
    original = M.CBDMModule.on_train_batch_end
    first = max(1, s["fit_steps"] // 10)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        step = self.global_step
        if step in (first, s["fit_steps"]):
            _sync(self.device)
            marks[step] = time.perf_counter()

    M.CBDMModule.on_train_batch_end = on_train_batch_end
    from cbdm_aug.data.npz import write_npz

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        counts = [int(5000 * 0.01 ** (i / 9)) for i in range(10)]
        if args.dry:
            counts = [8, 6, 4, 3, 2, 2, 2, 1, 1, 1]
        labels = np.repeat(np.arange(10), counts)
        images = rng.integers(0, 256, (len(labels), s["image_size"], s["image_size"], 3), dtype=np.uint8)
        write_npz(Path(tmp) / "data.npz", x_train=images, y_train=labels)
        cfg = FitConfig(DataConfig(str(Path(tmp) / "data.npz")),
                        TrainConfig(s["preset"], max_steps=s["fit_steps"], batch_size=s["batch"],
                                    sample_every=10 ** 9, checkpoint_every=max(s["fit_steps"] // 2, 1),
                                    accelerator="gpu" if device.type == "cuda" else "cpu", devices="1"))
        t0 = time.perf_counter()
        fit(cfg, Path(tmp) / "run", progress=False, echo=lambda *a: None)
        wall = time.perf_counter() - t0
        resolved = json.loads((Path(tmp) / "run" / "run.json").read_text())["resolved"]["train"]
    steady = (s["fit_steps"] - first) * s["batch"] / (marks[s["fit_steps"]] - marks[first]) \
        if len(marks) == 2 and s["fit_steps"] > first else None
    part.add(f"fit-generator {s['fit_steps']} steps, end to end", s["fit_steps"] * s["batch"] / wall,
             wall_s=wall, steps_per_sec=s["fit_steps"] / wall,
             settings={k: resolved[k] for k in ("precision", "compile", "device_data")})
    part.add(f"fit-generator, steady (steps {first}-{s['fit_steps']})", steady)
    part.result["status"] = "done"
    part.save()


def part_sample(args, s, device, out):
    """``generate_cache`` images/s per sampler (HDF5 writes included) on a random-weight UNet, after
    a warm-up batch (its time, compile included, is the warm-up)."""
    import tempfile

    from cbdm_aug.cache import plan as plans
    from cbdm_aug.cache.generate import generate_cache
    from cbdm_aug.diffusion.denoiser import choose
    from cbdm_aug.diffusion.sampler_settings import SAMPLING, SamplerSettings
    from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
    from cbdm_aug.diffusion.unet import build_unet, unet_config
    from cbdm_aug.generator.run_dir import Generator

    part = Part("sample", out, s)
    names = [str(c) for c in range(s["classes"])]
    cfg = unet_config(s["preset"], s["image_size"], s["channels"], len(names))
    torch.manual_seed(0)
    unet = build_unet(cfg).to(device).eval().requires_grad_(False)
    meta = {"preset": s["preset"], "model": cfg, "class_names": names, "class_counts": [1] * len(names),
            "image_size": s["image_size"], "channels": s["channels"], "schedule": DEFAULT_SCHEDULE, "loss": {},
            "step": 0, "package_version": "benchmark"}
    gen = Generator(unet, meta, Path("."))
    auto = choose(device)
    arms = [("dpmpp-sde", 20, ("fp32", False)), ("dpmpp-sde", 20, auto), ("dpmpp", 20, auto),
            ("ddim", 50, auto), ("ddpm", 1000, auto)]
    with tempfile.TemporaryDirectory() as tmp:
        for k, (sampler, steps, (precision, compiled)) in enumerate(arms):
            steps = s["sample_steps"] if args.dry else steps
            per_class = max(1, s["sample_images"] // (10 if sampler == "ddpm" else 1) // len(names))
            total = per_class * len(names)  # DDPM's 1000 steps: a tenth of the images, in one batch
            batch = min(s["sample_batch"], total)
            name = f"{sampler} {steps}, {precision}{' compiled' if compiled else ' eager'}"
            if compiled and args.dry:
                part.add(name, None, note="skipped in --dry")
                continue
            opts = {"batch_size": batch, "progress": False, "precision": precision, "compile": compiled}
            # Warm-up: one batch of the same shape at 2 steps compiles (shapes, not steps, decide it).
            t0 = time.perf_counter()
            generate_cache(gen, Path(tmp) / f"warm{k}.h5", plans.fixed_plan(names, max(1, batch // len(names))),
                           SamplerSettings(sampler, 2, SAMPLING.guidance, 0), **opts)
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            generate_cache(gen, Path(tmp) / f"run{k}.h5", plans.fixed_plan(names, per_class),
                           SamplerSettings(sampler, steps, SAMPLING.guidance, 0), **opts)
            dt = time.perf_counter() - t0
            part.add(name, total / dt, warm, batch=batch, images=total)
    part.result["status"] = "done"
    part.save()


def part_classify(args, s, device, out):
    """Classifier-training images/s (ResNet-32 step with crop 4 + flip, SGD) on the device-data path
    against the DataLoader path, one epoch of a CIFAR-10-LT-sized set each, after a warm-up epoch."""
    import numpy as np

    from cbdm_aug.classify.recipe import DataConfig, ModelConfig, Recipe, ScheduleConfig
    from cbdm_aug.classify.train import ArrayDataset, build_model, make_loader, make_transform

    part = Part("classify", out, s)
    size, ch, C = 32 if not args.dry else 8, 3, 10
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, s["cls_images"])
    images = rng.integers(0, 256, (s["cls_images"], size, size, ch), dtype=np.uint8)
    recipe = Recipe(data=DataConfig(crop_padding=4 if not args.dry else 1, hflip=True),
                    model=ModelConfig(name=s["cls_model"]), schedule=ScheduleConfig(batch_size=s["cls_batch"]),
                    num_workers=0 if args.dry else 4)
    for arm, device_data in (("DataLoader (host crop/flip)", False), ("device data (GPU crop/flip)", True)):
        torch.manual_seed(0)
        dataset = ArrayDataset(images, labels, [str(c) for c in range(C)],
                               make_transform(size, ch, recipe.data.crop_padding, True))
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
        loader, _ = make_loader(recipe, dataset, sampler, device, device_data, torch.Generator().manual_seed(0))
        model = build_model(recipe, C, ch).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)

        def epoch():
            seen = 0
            for x, y, *_ in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(y)
            _sync(device)
            return seen

        t0 = time.perf_counter()
        epoch()
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        seen = epoch()
        dt = time.perf_counter() - t0
        part.add(arm, seen / dt, warm, epoch_s=dt,
                 minutes_for_200_epochs=200 * dt / 60 if not args.dry else None)
    part.result["status"] = "done"
    part.save()


# A random-weight autoencoder of SD's VAE layout (f8, 4 latent channels, 83.7M parameters): its speed is
# the real one's, and no weights can be downloaded. --dry: a tiny one (f4) at 32 px.
SD_VAE = {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
          "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "latent_channels": 4,
          "norm_num_groups": 32, "sample_size": 256}
TINY_VAE = {"block_out_channels": [4, 8, 8], "down_block_types": ["DownEncoderBlock2D"] * 3,
            "up_block_types": ["UpDecoderBlock2D"] * 3, "layers_per_block": 1, "latent_channels": 4,
            "norm_num_groups": 2}


def _latent_sizes(args) -> dict:
    if args.dry:
        return {"vae": TINY_VAE, "image_size": 32, "counts": [6, 4, 2], "preset": "tiny", "batch": 4, "fit_steps": 2,
                "sample_images": 6, "sample_steps": 2}
    # ~1.3k long-tailed 256 px images (both mirrors encoded), 300 steps of the paper UNet on 32x32x4
    # latents (eager: a compile would take most of the budget), 240 images sampled and decoded.
    return {"vae": SD_VAE, "image_size": 256, "counts": [int(500 * 0.01 ** (i / 9)) for i in range(10)],
            "preset": "cifar-paper", "batch": 48, "fit_steps": 300, "sample_images": 240, "sample_steps": 20}


def part_latent(args, s, device, out):
    """The latent route at 256 px (issue 33): encoding the training images (both mirrors) into the latent
    cache, fit-generator --autoencoder on the latents, and generate with decoding, each end to end."""
    import tempfile

    import numpy as np
    from diffusers import AutoencoderKL

    from cbdm_aug.cache import plan as plans
    from cbdm_aug.cache.generate import generate_cache
    from cbdm_aug.diffusion.autoencoder import find_autoencoder, load_autoencoder
    from cbdm_aug.diffusion.denoiser import choose
    from cbdm_aug.diffusion.sampler_settings import SAMPLING, SamplerSettings
    from cbdm_aug.generator.fit import DataConfig, FitConfig, TrainConfig, fit
    from cbdm_aug.generator.latents import encode_latents
    from cbdm_aug.generator.run_dir import load_generator

    z = _latent_sizes(args)
    part = Part("latent", out, {k: v for k, v in z.items() if k != "vae"} | {"vae_blocks": z["vae"]["block_out_channels"]})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        AutoencoderKL(**z["vae"]).save_pretrained(tmp / "vae")
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(len(z["counts"])), z["counts"])
        low = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)  # smooth-ish: 16x16 blocks upsampled
        images = low.repeat(z["image_size"] // 16, axis=1).repeat(z["image_size"] // 16, axis=2)
        np.savez(tmp / "data.npz", x_train=images, y_train=labels)
        record = find_autoencoder(tmp / "vae")
        (tmp / "run").mkdir()
        t0 = time.perf_counter()  # the encoding fit-generator does first, timed on its own
        encode_latents(tmp / "run" / "latents.h5", load_autoencoder(record, device), record, images, labels,
                       progress=False)
        _sync(device)
        dt = time.perf_counter() - t0
        part.add(f"encode {z['image_size']} px, both mirrors (AutoencoderKL f{record.factor})", len(labels) / dt,
                 wall_s=dt, images=len(labels))
        cfg = FitConfig(DataConfig(str(tmp / "data.npz")),
                        TrainConfig(z["preset"], max_steps=z["fit_steps"], batch_size=z["batch"], sample_every=10 ** 9,
                                    checkpoint_every=z["fit_steps"], compile=False, autoencoder=str(tmp / "vae"),
                                    accelerator="gpu" if device.type == "cuda" else "cpu", devices="1"))
        t0 = time.perf_counter()
        fit(cfg, tmp / "run", progress=False, echo=lambda *a: None)  # finds the latents encoded above
        dt = time.perf_counter() - t0
        part.add(f"fit-generator --autoencoder {z['fit_steps']} steps ({z['preset']} on latents), end to end",
                 z["fit_steps"] * z["batch"] / dt, wall_s=dt, steps_per_sec=z["fit_steps"] / dt)
        gen = load_generator(tmp / "run", device)
        names = gen.class_names
        precision, _ = choose(device)
        per_class = max(1, z["sample_images"] // len(names))
        t0 = time.perf_counter()
        generate_cache(gen, tmp / "syn.h5", plans.fixed_plan(names, per_class),
                       SamplerSettings(SAMPLING.sampler, z["sample_steps"], SAMPLING.guidance, 0), batch_size=min(120, per_class * len(names)),
                       progress=False, precision=precision)
        dt = time.perf_counter() - t0
        part.add(f"generate + decode {z['image_size']} px, dpmpp-sde {z['sample_steps']}, {precision}",
                 per_class * len(names) / dt, wall_s=dt, images=per_class * len(names))
    part.result["status"] = "done"
    part.save()


def report(out: Path) -> str:
    """The one table of every part's rows (and the parts that failed or timed out)."""
    lines = ["| part | arm | images/s | warm-up s | notes |", "|---|---|---|---|---|"]
    env = None
    for name in PARTS:
        path = out / f"{name}.json"
        status = (out / f"{name}.status").read_text().strip() if (out / f"{name}.status").exists() else "not run"
        if not path.exists():
            lines.append(f"| {name} | - | - | - | {status}; see {name}.log |")
            continue
        r = json.loads(path.read_text())
        env = env or r
        for row in r["rows"]:
            ips = f"{row['images_per_sec']:.1f}" if row.get("images_per_sec") else "-"
            warm = f"{row['warmup_s']:.1f}" if row.get("warmup_s") else "-"
            notes = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                              if k not in ("arm", "images_per_sec", "warmup_s") and v is not None)
            lines.append(f"| {name} | {row['arm']} | {ips} | {warm} | {notes} |")
        if status != "ok":
            lines.append(f"| {name} | (stopped) | - | - | {status}; the rows above are what it finished |")
    head = ["# gpu_check", ""]
    if env:
        m = env["machine"]
        head += [f"machine: {m['gpu'] or 'no GPU'} / {m['cpu']} ({m['cpu_count']} cores); torch "
                 f"{env['versions']['torch']}, diffusers {env['versions']['diffusers']}; commit {env['commit']}"
                 f"{' (dirty)' if env.get('dirty_tree') else ''}; settings {json.dumps(env['settings'])}", ""]
    text = "\n".join(head + lines) + "\n"
    (out / "gpu_check.md").write_text(text)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=(*PARTS, "report"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (tests)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "report":
        print(report(out))
        return
    device = torch.device("cpu" if args.dry or not torch.cuda.is_available() else "cuda")
    globals()[f"part_{args.part}"](args, _sizes(args), device, out)


if __name__ == "__main__":
    main()
