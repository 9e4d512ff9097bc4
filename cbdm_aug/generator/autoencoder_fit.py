"""``cbdm-aug fit-autoencoder``: a small diffusers ``AutoencoderKL`` trained on the user's own images, for
a latent generator where no pretrained autoencoder is at hand (the CPU path; no weights can be
downloaded here).

The objective is the KL autoencoder's (``diffusion.autoencoder.autoencoder_loss``): L1 reconstruction
plus a small KL term, without LDM's perceptual and adversarial terms (they need a pretrained network
and a discriminator; on small images and a CPU budget the L1 autoencoder is what fits). After training,
``scaling_factor`` is set to 1 / std of the training set's latent means, as LDM does (sec. 4.3.2), so
the generator learns unit-scale latents. The folder is written with ``save_pretrained``, so
``fit-generator --autoencoder DIR`` loads it like any diffusers autoencoder.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cbdm_aug.errors import ConfigError

log = logging.getLogger(__name__)

FACTORS = (2, 4, 8)


@dataclass(frozen=True)
class AutoencoderFitConfig:
    factor: int = 4              # downsampling factor: 32 px -> 8x8 latents, 256 px -> 64x64
    latent_channels: int = 4     # as SD's VAE
    width: int = 32              # channels of the first block; each later block doubles it, capped at 4x
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    beta: float = 1e-6           # KL weight: LDM's value; the latents stay close to a deterministic code
    hflip: bool = True           # random mirrors while training (off for grey digits: --no-hflip)
    seed: int = 0

    def __post_init__(self):
        if self.factor not in FACTORS:
            raise ConfigError(f"--factor must be one of {FACTORS}, got {self.factor}")
        for name in ("latent_channels", "width", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr <= 1:
            raise ConfigError(f"--lr must be in (0, 1], got {self.lr}")
        if not self.beta >= 0:
            raise ConfigError(f"--beta must be >= 0, got {self.beta}")

    def model_config(self, channels: int) -> dict:
        """The ``AutoencoderKL`` keyword arguments for images of ``channels`` channels."""
        levels = int(math.log2(self.factor)) + 1
        widths = [self.width * min(2 ** i, 4) for i in range(levels)]
        return {"in_channels": channels, "out_channels": channels, "latent_channels": self.latent_channels,
                "block_out_channels": widths, "down_block_types": ["DownEncoderBlock2D"] * levels,
                "up_block_types": ["UpDecoderBlock2D"] * levels, "layers_per_block": 1,
                "norm_num_groups": math.gcd(8, self.width), "mid_block_add_attention": False}


def fit_autoencoder(images: np.ndarray, cfg: AutoencoderFitConfig, out: str | os.PathLike, device="cpu",
                    progress: bool = True, echo=print) -> Path:
    """Train an ``AutoencoderKL`` on ``images`` (uint8 (N, H, W, C)) and save it to ``out`` (which must
    not exist or be empty); returns ``out``."""
    from diffusers import AutoencoderKL

    from cbdm_aug.atomic import atomic_dir

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose another --out")
    if images.shape[1] % cfg.factor:
        raise ConfigError(f"image size {images.shape[1]} is not divisible by --factor {cfg.factor}")
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(**cfg.model_config(images.shape[-1])).to(device).train()
    echo(f"AutoencoderKL: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M parameters, factor {cfg.factor}, "
         f"{images.shape[1]}x{images.shape[1]}x{images.shape[-1]} -> "
         f"{images.shape[1] // cfg.factor}x{images.shape[1] // cfg.factor}x{cfg.latent_channels}")
    x_all = torch.from_numpy(images)
    _train(vae, x_all, cfg, device, progress)
    vae.eval()
    scale = _scaling_factor(vae, x_all, device)
    vae.register_to_config(scaling_factor=scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    with atomic_dir(out) as tmp:
        vae.save_pretrained(tmp)
        (tmp / "fit_autoencoder.json").write_text(json.dumps(
            {"config": asdict(cfg), "images": list(images.shape)}, indent=2))
    echo(f"autoencoder written to {out} (scaling factor {scale:.4g}); use it with "
         f"`cbdm-aug fit-generator DATA --autoencoder {out}`")
    return out


def _batches(x_all: torch.Tensor, cfg: AutoencoderFitConfig, g: torch.Generator, device):
    """Endless random batches, float (B, C, H, W) in [-1, 1], mirrored at random when ``cfg.hflip``."""
    while True:
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=g)
        x = x_all[idx].permute(0, 3, 1, 2).float() / 127.5 - 1
        if cfg.hflip:
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        yield x.to(device)


def _train(vae, x_all: torch.Tensor, cfg: AutoencoderFitConfig, device, progress: bool) -> None:
    from cbdm_aug.diffusion.autoencoder import autoencoder_loss
    from cbdm_aug.progress import counter

    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    bar = counter(cfg.steps, "fit-autoencoder", "step") if progress else None
    for _, x in zip(range(cfg.steps), _batches(x_all, cfg, g, device)):
        terms = autoencoder_loss(vae, x, cfg.beta, generator=g)
        opt.zero_grad(set_to_none=True)
        terms["loss"].mean().backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if bar is not None:
            bar.set_postfix(rec=f"{terms['rec'].mean().item():.4f}", kl=f"{terms['kl'].mean().item():.3g}")
            bar.update(1)
    if bar is not None:
        bar.close()
    log.info("fit-autoencoder: final L1 %.4f", terms["rec"].mean().item())


@torch.no_grad()
def _scaling_factor(vae, x_all: torch.Tensor, device, batch: int = 64) -> float:
    """1 / std of the posterior means over the training images (LDM sec. 4.3.2)."""
    means = [vae.encode((x_all[i:i + batch].permute(0, 3, 1, 2).float() / 127.5 - 1).to(device)).latent_dist.mean
             for i in range(0, len(x_all), batch)]
    return float(1.0 / torch.cat(means).float().std().clamp_min(1e-6))
