"""The generator run folder: what ``fit-generator`` writes and everything else reads.

    RUN_DIR/generator.json     model config, classes, counts, loss and schedule settings, step
    RUN_DIR/ema.safetensors    EMA weights of the UNet (the weights used for sampling)
    RUN_DIR/checkpoints/       Lightning resume checkpoints (training only)
    RUN_DIR/logs/, samples/    CSV log and per-class PNG grids
    RUN_DIR/latents.h5         a latent generator's encoded training images (``generator.latents``)

A latent generator's ``generator.json`` also holds ``autoencoder``: the record (path, class, config,
weights hash) of the diffusers autoencoder it was fitted on. Its UNet works on latents; ``image_size``
and ``channels`` are still those of the images it makes, which ``Generator.decode`` returns.

Both sampling files are written to a temporary name and renamed, so a reader never sees half of
one. Loading never unpickles anything: weights are safetensors and the config is JSON.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cbdm_aug.atomic import write_bytes_atomic
from cbdm_aug.diffusion.unet import MAX_MODEL_BYTES
from cbdm_aug.errors import ConfigError, UserError

FORMAT = "cbdm-aug-generator"
FORMAT_VERSION = 1
CONFIG_NAME = "generator.json"
WEIGHTS_NAME = "ema.safetensors"


class RunDirError(UserError):
    """A run folder that is missing, unfinished, foreign or from a newer version."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_generator(run_dir: str | os.PathLike, unet: torch.nn.Module, meta: dict) -> Path:
    """Write ``unet``'s weights and ``meta`` (must hold ``model``, ``class_names``...) atomically."""
    from safetensors.torch import save

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in unet.state_dict().items()}
    write_bytes_atomic(run_dir / WEIGHTS_NAME, save(state), fsync=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta,
            "weights_sha256": sha256_file(run_dir / WEIGHTS_NAME)}
    write_bytes_atomic(run_dir / CONFIG_NAME, json.dumps(meta, indent=2).encode(), fsync=True)
    return run_dir


def read_meta(run_dir: str | os.PathLike) -> dict:
    """The run's ``generator.json``, checked for format and version."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_NAME
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such generator run folder")
    if not path.exists():
        raise RunDirError(f"{run_dir}: no {CONFIG_NAME}; not a finished generator run "
                          f"(resume training with `cbdm-aug fit-generator ... --out {run_dir} --resume`)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RunDirError(f"{path}: not a cbdm-aug generator config")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise RunDirError(f"{path}: format version {meta['format_version']} is newer than this "
                          f"cbdm-aug understands ({FORMAT_VERSION}); upgrade cbdm-aug")
    return meta


@dataclass
class Generator:
    """A trained class-conditional denoiser and what is needed to sample from it.

    ``unet(x_t, t, class_labels=y).sample`` predicts the noise epsilon for images x_t in [-1, 1],
    float (N, channels, image_size, image_size). Label ``null_class`` means "no label".
    """

    unet: torch.nn.Module
    meta: dict
    run_dir: Path | None = None
    decoder: torch.nn.Module | None = None  # a latent generator's LatentDecoder: latents -> images
    class_names: list[str] = field(init=False)

    def __post_init__(self):
        self.class_names = list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def sample_size(self) -> int:
        """The size the UNet samples at: the image's, or a latent generator's latent grid."""
        return int(self.meta["model"]["sample_size"])

    @property
    def sample_channels(self) -> int:
        return int(self.meta["model"]["in_channels"])

    @property
    def autoencoder(self):
        """A latent generator's ``AutoencoderRecord``; None for a pixel generator."""
        from cbdm_aug.diffusion.autoencoder import AutoencoderRecord

        return AutoencoderRecord.from_json(self.meta["autoencoder"]) if self.meta.get("autoencoder") else None

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """What the sampler made -> images, float (N, channels, image_size, image_size) in [-1, 1]."""
        return x if self.decoder is None else self.decoder(x.to(self.device))

    @property
    def schedule(self) -> dict:
        return dict(self.meta["schedule"])

    @property
    def weights_sha256(self) -> str:
        return self.meta["weights_sha256"]

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def _check_model(meta: dict, path: Path) -> None:
    """Bound the UNet config and the sizes sampling will use; ``generator.json`` may come from anyone."""
    from cbdm_aug.diffusion.unet import check_unet_config

    model = meta.get("model")
    if not isinstance(model, dict):
        raise RunDirError(f"{path}: 'model' must be a UNet config object, got {model!r:.80}")
    try:
        check_unet_config(model)
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        raise RunDirError(f"{path}: invalid 'model' config ({type(e).__name__}: {e})") from None
    names = meta.get("class_names")
    expected = {"image_size": model["sample_size"], "channels": model["in_channels"],
                "number of class_names": model["num_class_embeds"] - 1}
    record = _autoencoder_record(meta, path)
    if record is not None:  # the UNet sees latents; the images are the decoder's
        expected |= {"image_size": model["sample_size"] * record.factor, "channels": record.in_channels}
        if model["in_channels"] != record.latent_channels:
            raise RunDirError(f"{path}: the model takes {model['in_channels']} channels but the autoencoder's "
                              f"latents have {record.latent_channels}")
    elif model["in_channels"] not in (1, 3):
        raise RunDirError(f"{path}: a pixel generator's model must take 1 or 3 channels, got {model['in_channels']}")
    found = {"image_size": meta.get("image_size"), "channels": meta.get("channels"),
             "number of class_names": len(names) if isinstance(names, list) else names}
    for key in expected:
        if found[key] != expected[key]:
            raise RunDirError(f"{path}: {key} is {found[key]!r:.40} but the model is built for {expected[key]}")


def _autoencoder_record(meta: dict, path: Path):
    from cbdm_aug.diffusion.autoencoder import AutoencoderRecord

    if not meta.get("autoencoder"):
        return None
    try:
        record = AutoencoderRecord.from_json(meta["autoencoder"])
        record.factor  # noqa: B018 - reads the config's block list
        return record
    except (TypeError, KeyError, AttributeError, ValueError):
        raise RunDirError(f"{path}: invalid 'autoencoder' record") from None


def load_generator(run_dir: str | os.PathLike, device: str | torch.device | None = None) -> Generator:
    """Load a ready-to-sample generator (EMA weights, eval mode) from a run folder.

    Only JSON and safetensors are read, so a run folder from an untrusted source cannot run code.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from cbdm_aug.diffusion.unet import build_unet

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    _check_model(meta, run_dir / CONFIG_NAME)  # before a byte of weights is read or allocated
    weights = run_dir / WEIGHTS_NAME
    if not weights.exists():
        raise RunDirError(f"{run_dir}: no {WEIGHTS_NAME}")
    if weights.stat().st_size > MAX_MODEL_BYTES + (1 << 20):  # + the safetensors header
        raise RunDirError(f"{weights}: {weights.stat().st_size / 2 ** 30:.1f} GiB is above the budget of "
                          f"{MAX_MODEL_BYTES / 2 ** 30:g} GiB")
    if sha256_file(weights) != meta.get("weights_sha256"):
        raise RunDirError(f"{weights}: weights do not match the hash in {CONFIG_NAME}; "
                          f"the file is corrupt or from another run")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as e:
        raise RunDirError(f"{weights}: unreadable safetensors file ({e})") from None
    model = meta["model"]
    try:  # the config is only keyword arguments of UNet2DModel: a bad one is a TypeError, never code
        unet = build_unet(model)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        raise RunDirError(f"{run_dir / CONFIG_NAME}: invalid 'model' config ({type(e).__name__}: {e})") from None
    try:
        unet.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:2]
        raise RunDirError(f"{weights}: weights do not fit the model in {CONFIG_NAME} ({' '.join(first)})") from None
    unet.eval().requires_grad_(False)
    if device is not None:
        unet.to(device)
    return Generator(unet, meta, run_dir, _decoder(meta, device))


def _decoder(meta: dict, device):
    """A latent generator's decoder, loaded from the autoencoder folder it records (its hash checked)."""
    from cbdm_aug.diffusion.autoencoder import LatentDecoder, load_autoencoder

    record = _autoencoder_record(meta, Path(CONFIG_NAME))
    return None if record is None else LatentDecoder(load_autoencoder(record, device), record)
