"""``cbdm-aug fit-generator``."""
from __future__ import annotations

from pathlib import Path

import click

from cbdm_aug.diffusion.unet import PRESETS


@click.command("fit-generator")
@click.argument("data", metavar="DATA")
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False),
              help="Run folder to write [default: runs/<name of DATA>].")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="cpu", show_default=True,
              help="UNet size: cifar-paper (35.7M, GPU), small, cpu (~1M), tiny (tests).")
@click.option("--image-size", type=int, default=None, help="Model resolution [default: the data's].")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="1 (grey) or 3 (RGB) [default: the data's].")
@click.option("--split", default="train", show_default=True, help="Split of an .npz file (train or test).")
@click.option("--longtail", type=click.Choice(["exp", "step"]), default=None,
              help="Build a long-tailed view of a balanced set with this profile.")
@click.option("--imbalance", type=float, default=None, help="Imbalance ratio rho of --longtail [default: 100].")
@click.option("--max-per-class", type=int, default=None, help="Head-class count n_max of --longtail.")
@click.option("--data-seed", type=int, default=0, show_default=True, help="Seed choosing the --longtail subset.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable image files (and report how many) instead of failing.")
@click.option("--tau", type=float, default=1.0, show_default=True, help="CBDM regulariser weight; 0 = plain DDPM.")
@click.option("--gamma", type=float, default=0.25, show_default=True, help="Commitment-term weight.")
@click.option("--target", type=click.Choice(["train", "uniform"]), default=None,
              help="q(y'): training label frequencies or uniform [default: train; uniform with --init-from].")
@click.option("--p-uncond", type=float, default=0.1, show_default=True, help="Per-sample label-drop probability (CFG).")
@click.option("--max-steps", type=int, default=2000, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--warmup-steps", type=int, default=None, help="LR warm-up [default: min(5000, max_steps/10)].")
@click.option("--ema-decay", type=float, default=0.9999, show_default=True, help="Cap of the warmed-up EMA decay.")
@click.option("--hflip/--no-hflip", default=None, help="Random horizontal flips [default: on for RGB, off for grey].")
@click.option("--balance-power", type=float, default=1.0, show_default=True,
              help="Draw each class with probability ~ (its image count) ** P: 1 as the data, 0 class-balanced, "
                   "0.5 in between. Lower values show rare classes to the generator more often.")
@click.option("--augment", "augment_p", type=float, default=0.0, show_default=True,
              help="Augmentation-conditioned training (CBDM+ADA, Karras et al.): each image is warped by each "
                   "of scale, rotation, anisotropy and translation (and flips where --hflip holds) with "
                   "probability P, and the UNet is told how; sampling asks for no warp. 0.12 is the "
                   "reference's value. Fights memorisation of small classes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--num-workers", type=int, default=0, show_default=True, help="DataLoader workers (data is in memory).")
@click.option("--accelerator", default="auto", show_default=True, help="Lightning accelerator: auto, cpu, gpu.")
@click.option("--devices", default="auto", show_default=True, help="Lightning devices, e.g. 1, 4 or auto.")
@click.option("--num-nodes", type=int, default=1, show_default=True)
@click.option("--strategy", default="auto", show_default=True, help="Lightning strategy, e.g. ddp.")
@click.option("--precision", default=None, help="Lightning precision [default: bf16-mixed on GPU, 32-true on CPU].")
@click.option("--sample-every", type=int, default=500, show_default=True, help="Steps between PNG sample grids.")
@click.option("--checkpoint-every", type=int, default=250, show_default=True, help="Steps between resume checkpoints.")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="Fine-tune an existing generator run with the regulariser.")
@click.option("--continue-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="Go on from a finished generator run's last checkpoint (weights, optimiser, EMA and step) on "
                   "DATA, to --max-steps in all, its steps counted: one optimisation whose data change.")
@click.option("--compile/--no-compile", "compile_unet", default=None,
              help="torch.compile the UNet for training: minutes of warm-up, then faster steps "
                   "[default: on for CUDA, off on CPU].")
@click.option("--device-data/--no-device-data", default=None,
              help="Keep the training images on the accelerator and gather batches there instead of "
                   "a host DataLoader [default: on for CUDA when they take under a tenth of its free memory].")
@click.option("--autoencoder", default=None, type=click.Path(file_okay=False),
              help="A diffusers autoencoder folder (AutoencoderKL or AutoencoderTiny; a pipeline folder's vae/ "
                   "is found): fit a latent generator on its latents, for images of 64 px and up. The "
                   "training images are encoded once into OUT/latents.h5; generate decodes to pixels. "
                   "No autoencoder at hand: `cbdm-aug fit-autoencoder DATA --out DIR`.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
def fit_generator(data, out, preset, image_size, channels, split, longtail, imbalance, max_per_class,
                  data_seed, skip_bad, tau, gamma, target, p_uncond, max_steps, batch_size, lr,
                  warmup_steps, ema_decay, hflip, balance_power, augment_p, seed, num_workers, accelerator, devices, num_nodes,
                  strategy, precision, sample_every, checkpoint_every, init_from, continue_from, compile_unet, device_data,
                  autoencoder, resume):
    """Train a class-balancing diffusion model on DATA.

    DATA is an image folder (DATA/<class>/*.png|jpg|...), an .npz file with image and label
    arrays, or `digits` (scikit-learn's bundled 8x8 digits). --longtail builds a long-tailed view
    of a balanced set, e.g. `--longtail exp --imbalance 100 --max-per-class 5000`.
    """
    from cbdm_aug.diffusion.loss import CBDMLossConfig
    from cbdm_aug.generator.fit import DataConfig, FitConfig, TrainConfig, fit

    if longtail is None and (imbalance is not None or max_per_class is not None):
        raise click.UsageError("--imbalance and --max-per-class need --longtail exp|step")
    try:
        cfg = FitConfig(
            # str(Path(data)): "data/" and "data" are the same data, so the same run
            DataConfig(str(Path(data)), split, longtail, 100.0 if imbalance is None else imbalance, max_per_class,
                       data_seed, image_size, int(channels) if channels else None, skip_bad),
            TrainConfig(preset, max_steps, batch_size, lr, warmup_steps, 1.0, ema_decay, hflip, seed,
                        num_workers, accelerator, devices, num_nodes, strategy, precision, sample_every,
                        checkpoint_every, init_from,
                        continue_from=str(Path(continue_from).resolve()) if continue_from else None,
                        compile=compile_unet, device_data=device_data,
                        balance_power=balance_power, augment_p=augment_p,
                        autoencoder=str(Path(autoencoder).resolve()) if autoencoder else None),
            CBDMLossConfig(tau, gamma, target or ("uniform" if init_from else "train"), p_uncond),
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    from cbdm_aug.generator.fit import is_first_process
    from cbdm_aug.locking import output_lock

    out = Path(out) if out else default_run_dir(data)
    if not is_first_process():  # a DDP child re-runs this command line; rank 0 holds the lock
        fit(cfg, out, resume=resume, echo=click.echo)
        return
    with output_lock(out, folder=True, what="generator run folder", echo=click.echo):
        fit(cfg, out, resume=resume, echo=click.echo)


def default_run_dir(data: str) -> Path:
    """``runs/<name>``: the data folder's or .npz file's name, or ``digits``, as Lightning's
    ``lightning_logs/`` is named for what it holds."""
    path = Path(data)
    name = path.stem if path.suffix == ".npz" else (path.resolve().name if data != "digits" else data)
    return Path("runs") / (name or "run")


@click.command("fit-autoencoder")
@click.argument("data", metavar="DATA")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Folder to write the autoencoder to.")
@click.option("--image-size", type=int, default=None, help="Image size [default: the data's].")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="1 (grey) or 3 (RGB) [default: the data's].")
@click.option("--split", default="train", show_default=True, help="Split of an .npz file.")
@click.option("--factor", type=click.Choice(["2", "4", "8"]), default="4", show_default=True,
              help="Downsampling factor: the latent grid is image size / factor.")
@click.option("--latent-channels", type=int, default=4, show_default=True)
@click.option("--width", type=int, default=32, show_default=True, help="Channels of the first block.")
@click.option("--steps", type=int, default=2000, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--beta", type=float, default=1e-6, show_default=True, help="KL weight (LDM's).")
@click.option("--hflip/--no-hflip", default=None, help="Random mirrors [default: on for RGB, off for grey].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cpu, cuda or cuda:N.")
def fit_autoencoder(data, out, image_size, channels, split, factor, latent_channels, width, steps, batch_size, lr,
                    beta, hflip, seed, device):
    """Train a small diffusers AutoencoderKL on DATA's images, for `fit-generator --autoencoder OUT`.

    Use it where no pretrained autoencoder fits your images (none can be downloaded here). Train it on
    the training images only: an autoencoder that saw the test images leaks them into the generator.
    """
    from cbdm_aug.data import open_data
    from cbdm_aug.data.convert import convert_images
    from cbdm_aug.devices import resolve_device
    from cbdm_aug.generator.autoencoder_fit import AutoencoderFitConfig
    from cbdm_aug.generator.autoencoder_fit import fit_autoencoder as fit

    d = open_data(data, split=split, image_size=image_size, channels=int(channels) if channels else None)
    images = convert_images(d.images, image_size or d.image_size, int(channels) if channels else d.channels)
    try:
        cfg = AutoencoderFitConfig(int(factor), latent_channels, width, steps, batch_size, lr, beta,
                                   images.shape[-1] == 3 if hflip is None else hflip, seed)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"training data: {d.source}, {len(images)} images, {images.shape[1]}x{images.shape[2]}x{images.shape[3]}")
    fit(images, cfg, out, device=resolve_device(device), echo=click.echo)
