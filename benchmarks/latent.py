"""Issue 33's CPU measurement: a latent CBDM generator against the pixel one, under the same CPU minutes of
generator training, each through `cbdm-aug run` on CIFAR-10 few-shot (the JPEG copy, exp profile 500 -> 5,
32x32 RGB, a balanced test folder).

- pixel: `run --image-size 16` (the CPU default: the generator and the classifiers at 16x16);
- latent: `run --autoencoder AE` at the data's 32x32, AE a small AutoencoderKL trained here on the
  training images only (`cbdm-aug fit-autoencoder`, f4: 32x32x3 -> 8x8x4 latents; its minutes are
  reported apart from the generator's).

Both generators use `run`'s CPU preset (`cpu` UNet, batch 64); their step counts are set so each trains for
--gen-minutes of one CPU thread, from a probe of each UNet's CBDM step CPU time on one thread (printed and
recorded); the generator stage's wall seconds are reported too (the machine is shared, so wall time
includes others' load). Each arm keeps `run`'s own defaults otherwise (the pixel
generator's augmentation conditioning; none on latents, where pixel warps do not apply). Reported: each
"+ synthetic" arm against its real-only twin (few-shot, balanced; mean [95% t-interval] over the paired
seeds) and the best arm's absolute few-shot accuracy at its classifier's size (16 px for pixel, 32 px for
latent: the classifiers are not the same size, so compare gains within a run, absolutes across runs only
as what a user gets from each route).

    OMP_NUM_THREADS=1 python benchmarks/latent.py [--gen-minutes 5] [--ae-steps 1000] [--seeds 0,1,2]
        [--classifier-epochs 8]

Folders and runs go to --work (default $TMPDIR/cbdm-latent; data is never committed); a rerun reuses the
finished stages of each run. Writes benchmarks/results/latent.{json,md} with the machine, versions, commit.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see cbdm_aug/cli.py: before torch loads OpenMP
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402
from own_folders import _write_cifar, profile  # noqa: E402

CLI = [sys.executable, "-m", "cbdm_aug.cli"]
GEN_BATCH = 64  # run's CPU generator batch (pipeline.settings.resolve)


def build(work: Path, per_test: int) -> Path:
    """WORK/cifar10-500-5/{train,test}/<class>/*.jpg, written once."""
    import numpy as np

    root = work / "cifar10-500-5"
    if not (root / ".complete").exists():
        counts = profile(500, 5)
        order = np.random.default_rng(1).permutation(10)
        _write_cifar(root, counts, per_test, order, work)
        (root / ".complete").write_text(json.dumps({"counts": dict(zip(map(int, order), counts))}))
    return root


def _call(cmd: list, log: Path) -> subprocess.Popen:
    cmd = [str(c) for c in cmd]
    print("$", " ".join(cmd), flush=True)
    f = open(log, "a")  # noqa: SIM115 - closed with the process (see main)
    f.write("$ " + " ".join(cmd) + "\n")
    f.flush()
    return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


def fit_ae(data: Path, work: Path, steps: int, width: int) -> tuple[Path, float | None]:
    out = work / "ae"
    if (out / "config.json").exists():
        return out, json.loads((work / "ae_seconds.json").read_text())["seconds"]
    t0 = time.time()
    p = _call([*CLI, "fit-autoencoder", data / "train", "--out", out, "--steps", steps, "--width", width,
               "--device", "cpu"], work / "ae.log")
    if p.wait():
        raise SystemExit(f"fit-autoencoder failed; see {work / 'ae.log'}")
    seconds = time.time() - t0
    (work / "ae_seconds.json").write_text(json.dumps({"seconds": seconds}))
    return out, seconds


def step_seconds(size: int, channels: int, reps: int = 8) -> float:
    """CPU seconds of one CBDM training step (forward, backward, Adam) of run's CPU UNet on one thread."""
    import torch

    from cbdm_aug.diffusion.loss import CBDMLossConfig, cbdm_loss, ddpm_alpha_bar, target_distribution
    from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
    from cbdm_aug.diffusion.unet import build_unet, unet_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    unet = build_unet(unet_config("cpu", size, channels, 10)).train()
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    ab, q = ddpm_alpha_bar(DEFAULT_SCHEDULE), target_distribution("train", [1] * 10).float()
    x0, y = torch.randn(GEN_BATCH, channels, size, size), torch.arange(GEN_BATCH) % 10

    def step():
        loss = cbdm_loss(unet, x0, y, ab, q, CBDMLossConfig(), 10)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.process_time()  # CPU time, not wall: the machine is shared, and its load is not ours
    for _ in range(reps):
        step()
    return (time.process_time() - t0) / reps


def reconstruction(ae: Path, test: Path) -> dict:
    """The autoencoder's mean absolute error (on [-1, 1]) and PSNR on the test images: how much of each
    image the latent route can give back at all."""
    import torch

    from cbdm_aug.data import open_data
    from cbdm_aug.diffusion.autoencoder import find_autoencoder, load_autoencoder

    d = open_data(str(test), split="test", progress=False)
    vae = load_autoencoder(find_autoencoder(ae))
    x = torch.from_numpy(d.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = torch.cat([vae.decode(vae.encode(b).latent_dist.mean).sample.clamp(-1, 1) for b in x.split(100)])
    mse = ((rec - x) / 2).pow(2).mean().item()  # on [0, 1]
    # the pixel route's own loss of detail, for comparison: the test images down to 16 px and back up
    from cbdm_aug.data.convert import convert_images

    small = torch.from_numpy(convert_images(convert_images(d.images, 16, 3), d.image_size, 3))
    small = small.permute(0, 3, 1, 2).float() / 127.5 - 1
    mse16 = ((small - x) / 2).pow(2).mean().item()
    return {"l1": (rec - x).abs().mean().item(), "psnr_db": 10 * torch.log10(torch.tensor(1 / mse)).item(),
            "images": len(x), "l1_16px_round_trip": (small - x).abs().mean().item(),
            "psnr_db_16px_round_trip": 10 * torch.log10(torch.tensor(1 / mse16)).item()}


def summarise(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    stages = {p.stem: json.loads(p.read_text()).get("seconds") for p in (out / "stages").glob("*.json")}
    return {"per_seed": report["per_seed"], "paired": report["paired"], "twins": report["twins"],
            "best_real_only": report["best_real_only"], "best_synthetic": report["best_synthetic"],
            "stage_seconds": stages}


def _ci(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]" if d.get("lo") is not None else f"{d['mean']:+.1f}"


def _mean(values) -> str:
    return f"{sum(values) / len(values):.1f}" if values else "-"


def markdown(result: dict) -> str:
    env, a = result["env"], result["args"]
    lines = ["# Latent vs pixel CBDM generator on the CPU (issue 33)", "",
             f"machine: {env['machine']['cpu']} ({env['machine']['cpu_count']} cores, shared; OMP_NUM_THREADS=1); "
             f"torch {env['versions']['torch']}, diffusers {env['versions']['diffusers']}; commit {commit_text(env)}", "",
             f"`OMP_NUM_THREADS=1 python benchmarks/latent.py --gen-minutes {a['gen_minutes']} --ae-steps "
             f"{a['ae_steps']} --ae-width {a['ae_width']} --seeds {a['seeds']} --classifier-epochs {a['classifier_epochs']}`: CIFAR-10 JPEG copy, exp 500 -> 5 "
             f"({sum(profile(500, 5))} training images), test {a['test_per_class']} a class; each route through "
             "`cbdm-aug run` at its CPU defaults, generator steps set for the same minutes of training. Points of "
             "accuracy, mean over seeds; few-shot: the classes with fewer than 20 training images (5, 8 and 13); pairs: "
             "+ synthetic arm minus its real-only twin, mean [95% t-interval] over the paired seeds.", "",
             f"Autoencoder (latent route): AutoencoderKL f4 trained {a['ae_steps']} steps on the training images only "
             f"(width {a['ae_width']}) in {result['ae_seconds'] / 60:.1f} min wall (not counted in the generator "
             f"minutes); on the {result['ae_test']['images']} test images it reconstructs with mean |error| "
             f"{result['ae_test']['l1']:.3f} on [-1, 1], PSNR {result['ae_test']['psnr_db']:.1f} dB (the pixel route's "
             f"16 px round trip: {result['ae_test'].get('l1_16px_round_trip', float('nan')):.3f}, "
             f"{result['ae_test'].get('psnr_db_16px_round_trip', float('nan')):.1f} dB).", "",
             "| route | generator | steps | generator stage min | best real-only few | best arm few "
             "| control+syn - control, few | randaugment+syn - randaugment, few | same, balanced (control / RA) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for route, r in result["routes"].items():
        p, seeds = r["summary"]["paired"], r["summary"]["per_seed"]
        best = max(seeds, key=lambda arm: sum(seeds[arm].get("few", [0])) / max(1, len(seeds[arm].get("few", []))))
        lines.append(
            f"| {route} | {r['what']} | {r['gen_steps']} | {(r['summary']['stage_seconds'].get('generator') or 0) / 60:.1f} "
            f"| {_mean(seeds[r['summary']['best_real_only']].get('few', []))} ({r['summary']['best_real_only']}) "
            f"| {_mean(seeds[best].get('few', []))} ({best}) "
            f"| {_ci(p.get('control+synthetic-control', {}).get('few'))} "
            f"| {_ci(p.get('randaugment+synthetic-randaugment', {}).get('few'))} "
            f"| {_ci(p.get('control+synthetic-control', {}).get('balanced'))} / "
            f"{_ci(p.get('randaugment+synthetic-randaugment', {}).get('balanced'))} |")
    lines += ["", f"Probe, CPU seconds per CBDM step (batch {GEN_BATCH}, one thread): "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["probe"].items()), ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gen-minutes", type=float, default=5.0)
    p.add_argument("--ae-steps", type=int, default=1000)
    p.add_argument("--ae-width", type=int, default=16, help="fit-autoencoder --width: 16 gives channels 16/32/32")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--test-per-class", type=int, default=300)
    p.add_argument("--classifier-epochs", type=int, default=8,
                   help="classifier epochs of every arm (run's own choice here would be 30: hours on a shared CPU)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "cbdm-latent"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--from-json", default=None, help="only write the .md again from this latent.json")
    args = p.parse_args(argv)
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        Path(args.from_json).with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = build(work, args.test_per_class)
    probe_file = work / "probe.json"  # kept: a rerun must ask for the same steps to reuse the runs
    if not probe_file.exists():
        probe_file.write_text(json.dumps({"pixel 16x16x3": step_seconds(16, 3), "latent 8x8x4": step_seconds(8, 4)}))
    probe = json.loads(probe_file.read_text())
    print("probe:", probe, flush=True)
    steps = {route: max(1, int(args.gen_minutes * 60 / s)) for route, s in zip(("pixel", "latent"), probe.values())}
    common = [data / "train", "--test", data / "test", "--seeds", args.seeds, "--device", "cpu", "--no-progress",
              *(["--classifier-epochs", args.classifier_epochs] if args.classifier_epochs else [])]
    # the pixel run needs no autoencoder: it starts first, and the autoencoder trains beside it
    procs = {"pixel": _call([*CLI, "run", *common, "--out", work / "pixel", "--image-size", 16,
                             "--gen-steps", steps["pixel"]], work / "pixel.log")}
    ae, ae_seconds = fit_ae(data, work, args.ae_steps, args.ae_width)
    rec = reconstruction(ae, data / "test")
    print("autoencoder on the test images:", rec, flush=True)
    procs["latent"] = _call([*CLI, "run", *common, "--out", work / "latent", "--autoencoder", ae,
                             "--gen-steps", steps["latent"]], work / "latent.log")
    for route, proc in procs.items():  # both run at once, one thread each
        if proc.wait():
            raise SystemExit(f"the {route} run failed; see {work / (route + '.log')}")
    what = {"pixel": "cpu UNet on 16x16x3 pixels", "latent": "cpu UNet on 8x8x4 latents (32 px decoded)"}
    result = {"env": environment(), "args": vars(args), "probe": probe, "ae_seconds": ae_seconds, "ae_test": rec,
              "routes": {r: {"what": what[r], "gen_steps": steps[r], "summary": summarise(work / r)} for r in procs}}
    results = Path(args.results)
    (results / "latent.json").write_text(json.dumps(result, indent=1))
    (results / "latent.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
