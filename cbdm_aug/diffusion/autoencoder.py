"""A frozen diffusers autoencoder as the latent space of a CBDM generator (Rombach et al., CVPR 2022,
"High-Resolution Image Synthesis with Latent Diffusion Models").

    z  ~ q(z | x) = N(mu(x), sigma(x)^2)        (AutoencoderKL; AutoencoderTiny: z = E(x), no posterior)
    x0 = (z - shift_factor) * scaling_factor     what the UNet learns: unit-scale latents (LDM sec. 4.3.2)
    x  = D(x0 / scaling_factor + shift_factor)   decoding undoes the scaling first

``AutoencoderRecord`` identifies an autoencoder folder (its class, config and a hash of its weights)
without loading it; ``load_autoencoder`` loads it from the local folder only (nothing is downloaded).
Images are float (N, C, H, W) in [-1, 1] on both sides, as diffusers' autoencoders take and return them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cbdm_aug.errors import UserError

AUTOENCODER_CLASSES = ("AutoencoderKL", "AutoencoderTiny")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class AutoencoderError(UserError):
    """A folder that is not a usable diffusers autoencoder, or one that does not fit the data."""


@dataclass(frozen=True)
class AutoencoderRecord:
    """What identifies an autoencoder: where it is, which class, its config and its weights' SHA-256."""

    path: str                 # absolute path of the folder given (a pipeline folder or the autoencoder's own)
    subfolder: str | None     # "vae" inside a pipeline folder, else None
    class_name: str           # one of AUTOENCODER_CLASSES
    weights_sha256: str
    config: dict

    @property
    def folder(self) -> Path:
        return Path(self.path) / (self.subfolder or "")

    @property
    def scaling_factor(self) -> float:
        return float(self.config.get("scaling_factor") or 1.0)

    @property
    def shift_factor(self) -> float:
        return float(self.config.get("shift_factor") or 0.0)

    @property
    def factor(self) -> int:
        """Downsampling factor: each encoder block after the first halves the image."""
        key = "block_out_channels" if self.class_name == "AutoencoderKL" else "encoder_block_out_channels"
        return 2 ** (len(self.config[key]) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.config.get("latent_channels", 4))

    @property
    def in_channels(self) -> int:
        return int(self.config.get("in_channels", 3))

    @property
    def has_posterior(self) -> bool:
        """Whether encoding gives a Gaussian posterior (mean and log-variance) rather than one latent."""
        return self.class_name == "AutoencoderKL"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "AutoencoderRecord":
        return cls(**{k: d[k] for k in ("path", "subfolder", "class_name", "weights_sha256", "config")})


def _weights_sha256(folder: Path) -> str:
    """SHA-256 over the folder's weight files, in name order (name and bytes of each)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise AutoencoderError(f"{folder}: no weights (*.safetensors or *.bin) beside config.json")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def find_autoencoder(path: str | os.PathLike) -> AutoencoderRecord:
    """The record of the diffusers autoencoder in ``path`` (or in ``path/vae`` for a pipeline folder),
    read from its config.json and weight files; the weights are hashed, not loaded."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise AutoencoderError(f"--autoencoder {path}: no such folder")
    subfolder = None if (root / "config.json").exists() or not (root / "vae" / "config.json").exists() else "vae"
    folder = root / (subfolder or "")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise AutoencoderError(f"--autoencoder {path}: not a diffusers autoencoder folder (no readable "
                               "config.json, here or in vae/)") from None
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name not in AUTOENCODER_CLASSES:
        raise AutoencoderError(f"--autoencoder {path}: config.json names {name!r}, not a supported diffusers "
                               f"autoencoder ({', '.join(AUTOENCODER_CLASSES)})")
    return AutoencoderRecord(str(root), subfolder, name, _weights_sha256(folder), config)


def load_autoencoder(record: AutoencoderRecord, device=None) -> torch.nn.Module:
    """The autoencoder of ``record`` from its local folder, in eval mode with frozen weights; refuses
    a folder whose weights changed since the record was made."""
    import diffusers

    folder = record.folder
    if not folder.is_dir():
        raise AutoencoderError(f"autoencoder {folder} is gone; put it back or refit the generator")
    if _weights_sha256(folder) != record.weights_sha256:
        raise AutoencoderError(f"autoencoder {folder}: its weights changed since the generator was fitted "
                               "(hash mismatch); restore them or refit the generator")
    safetensors = any(p.suffix == ".safetensors" for p in folder.iterdir())
    try:
        vae = getattr(diffusers, record.class_name).from_pretrained(
            record.path, subfolder=record.subfolder, local_files_only=True, use_safetensors=safetensors,
            low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise AutoencoderError(f"autoencoder {folder}: cannot be loaded ({first})") from None
    vae.eval().requires_grad_(False)
    return vae.to(device) if device is not None else vae


def check_data_fits(record: AutoencoderRecord, image_size: int, channels: int) -> int:
    """The latent grid size for images of ``image_size`` px and ``channels``; ``AutoencoderError``
    when the autoencoder takes another channel count or cannot halve the size ``log2(factor)`` times."""
    if channels != record.in_channels:
        raise AutoencoderError(f"the autoencoder takes {record.in_channels}-channel images but the data has "
                               f"{channels}; pass --channels {record.in_channels} or bring another autoencoder")
    if image_size % record.factor:
        raise AutoencoderError(f"image size {image_size} is not divisible by the autoencoder's downsampling factor "
                               f"{record.factor}; pass --image-size {max(1, image_size // record.factor) * record.factor}")
    return image_size // record.factor


@torch.no_grad()
def encode_moments(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unscaled posterior (mean, log-variance) of images x (float (N, C, H, W) in [-1, 1]), each float32
    (N, c, h, w); an autoencoder without a posterior (AutoencoderTiny) gives (latents, None)."""
    out = vae.encode(x)
    dist = getattr(out, "latent_dist", None)
    if dist is None:
        return out.latents.float(), None
    return dist.mean.float(), dist.logvar.float()


def to_latent(record: AutoencoderRecord, mean: torch.Tensor, logvar: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw z ~ N(mean, exp(logvar)) (z = mean without ``logvar``), scaled as the UNet learns it:
    (z - shift_factor) * scaling_factor."""
    z = mean
    if logvar is not None:
        noise = torch.randn(mean.shape, generator=generator, device=generator.device if generator else mean.device)
        z = mean + (0.5 * logvar).exp() * noise.to(mean.device, mean.dtype)
    return (z - record.shift_factor) * record.scaling_factor


class LatentDecoder(torch.nn.Module):
    """Latents as the UNet makes them -> images: undoes the scaling, decodes; float (N, C, H, W) in [-1, 1]."""

    def __init__(self, vae: torch.nn.Module, record: AutoencoderRecord):
        super().__init__()
        self.vae, self.record = vae, record

    @torch.no_grad()
    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        z = latents.float() / self.record.scaling_factor + self.record.shift_factor
        return self.vae.decode(z.to(dtype)).sample.float().clamp(-1, 1)


def autoencoder_loss(vae, x: torch.Tensor, beta: float, generator: torch.Generator | None = None) -> dict:
    """Per-sample terms of the KL autoencoder's objective (Kingma & Welling 2014, as LDM trains its VAE
    minus the perceptual and adversarial terms): ``rec`` = mean |x - D(z)|, z ~ q(z|x), and
    ``kl`` = KL(q(z|x) || N(0, I)) per latent element; ``loss`` = rec + beta * kl, each float (N,)."""
    dist = vae.encode(x).latent_dist
    z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator,
                                           device=generator.device if generator else x.device).to(x.device)
    x_rec = vae.decode(z).sample
    rec = (x - x_rec).abs().mean(dim=(1, 2, 3))
    kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean(dim=(1, 2, 3))
    return {"loss": rec + beta * kl, "rec": rec, "kl": kl}
