"""Class-conditional UNet presets, built on diffusers' ``UNet2DModel``.

The label embedding is diffusers' ``num_class_embeds`` table, which is added to the time
embedding as in the DDPM/CBDM reference UNet. It has ``num_classes + 1`` rows: the last row is the
null class used for classifier-free guidance.

A generator trained with augmentation conditioning (``diffusion.augment``) has ``augment_dim`` in its
config: the UNet then also adds a bias-free linear map of the augmentation vector to the time
embedding, as the reference's ADA variant does. Called without a vector (every sampler) that term is
exactly zero. A config without ``augment_dim`` builds the plain ``UNet2DModel`` of every earlier run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from cbdm_aug.errors import ConfigError


@dataclass(frozen=True)
class UNetPreset:
    base_channels: int
    channel_mult: tuple[int, ...]
    layers_per_block: int
    attention_resolutions: tuple[int, ...]  # feature-map sizes (pixels) that get self-attention
    dropout: float
    norm_num_groups: int
    about: str


IMAGE_SIZES = (4, 1024)  # the image sizes a generator is built and trained at, in px


def check_image_size(size: int | None) -> None:
    """``ConfigError`` unless ``size`` (None: the data's) lies in ``IMAGE_SIZES``."""
    lo, hi = IMAGE_SIZES
    if size is not None and not lo <= size <= hi:
        raise ConfigError(f"--image-size must be in [{lo}, {hi}], got {size}")


PRESETS: dict[str, UNetPreset] = {
    # The DDPM CIFAR-10 UNet the CBDM paper uses: 35.7M parameters at 32x32.
    "cifar-paper": UNetPreset(128, (1, 2, 2, 2), 2, (16,), 0.1, 32,
                              "the paper's CIFAR UNet, ~35.7M parameters; for a GPU"),
    # Half the width and one level less than the paper UNet, for quick GPU runs (~6.5M parameters).
    "small": UNetPreset(64, (1, 2, 2), 2, (8,), 0.1, 32, "~6.5M parameters; quick GPU runs"),
    # The ~1M-parameter model whose CPU speed the developer guide measures (channels 32/64/64).
    "cpu": UNetPreset(32, (1, 2, 2), 1, (), 0.0, 8, "~1M parameters; CPU development at 8-28 px"),
    # For tests and smoke runs: trains 16x16 images on a CPU in seconds.
    "tiny": UNetPreset(16, (1, 2), 1, (), 0.0, 8, "~0.1M parameters; tests and smoke runs"),
}


def unet_config(preset: str, image_size: int, channels: int, num_classes: int, augment_dim: int = 0) -> dict:
    """The ``UNet2DModel`` config (a JSON-able dict) for ``preset`` at this data shape; with
    ``augment_dim`` > 0, also the size of the augmentation vector the UNet is conditioned on."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown UNet preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    levels = len(p.channel_mult)
    if image_size % 2 ** (levels - 1):
        raise ConfigError(f"preset {preset!r} halves the image {levels - 1} times, so --image-size "
                         f"must be a multiple of {2 ** (levels - 1)}; got {image_size}")
    resolutions = [image_size // 2 ** i for i in range(levels)]
    attn = [r in p.attention_resolutions for r in resolutions]
    return {
        "sample_size": image_size,
        "in_channels": channels,
        "out_channels": channels,
        "block_out_channels": [p.base_channels * m for m in p.channel_mult],
        "layers_per_block": p.layers_per_block,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "dropout": p.dropout,
        "norm_num_groups": p.norm_num_groups,
        "attention_head_dim": None,  # one head spanning all channels, as in the DDPM UNet
        "num_class_embeds": num_classes + 1,  # + the null class for classifier-free guidance
        **({"augment_dim": augment_dim} if augment_dim else {}),
    }


# Bounds on a UNet config read from a file (generator.json may come from anyone): far above every
# preset, far below what would exhaust a machine. The paper's CIFAR UNet holds 143 MB of fp32 weights.
MAX_MODEL_BYTES = 2 << 30
# Channels up to 64: a latent generator's UNet sees the autoencoder's latent channels (4 for SD's VAE,
# 16 for SD3's, 32 for DC-AE); a pixel generator's 1 or 3 are checked where the run folder is read.
_INT_BOUNDS = {"sample_size": (1, 1024), "in_channels": (1, 64), "out_channels": (1, 64),
               "layers_per_block": (1, 16), "num_class_embeds": (2, 100_001), "norm_num_groups": (1, 4096)}
_MAX_LEVELS, _MAX_CHANNELS, _MAX_AUGMENT_DIM = 8, 4096, 64
# Self-attention over an r x r feature map holds an (r^2 x r^2) matrix per image: 64 MB at r = 64.
_MAX_ATTENTION_SIZE = 64


def check_unet_config(config: dict) -> int:
    """Check an untrusted UNet config against fixed bounds before anything is allocated, then count
    its parameters on the meta device (no memory); returns the count. Raises ``ConfigError``."""
    for key, (lo, hi) in _INT_BOUNDS.items():
        value = config.get(key)
        if type(value) is not int or not lo <= value <= hi:
            raise ConfigError(f"model {key} must be an integer in [{lo}, {hi}], got {value!r:.40}")
    channels = config.get("block_out_channels")
    if (not isinstance(channels, list) or not 1 <= len(channels) <= _MAX_LEVELS
            or any(type(c) is not int or not 1 <= c <= _MAX_CHANNELS for c in channels)):
        raise ConfigError(f"model block_out_channels must be 1 to {_MAX_LEVELS} integers in "
                          f"[1, {_MAX_CHANNELS}], got {channels!r:.60}")
    if "augment_dim" in config and (type(config["augment_dim"]) is not int
                                    or not 1 <= config["augment_dim"] <= _MAX_AUGMENT_DIM):
        raise ConfigError(f"model augment_dim must be an integer in [1, {_MAX_AUGMENT_DIM}], "
                          f"got {config['augment_dim']!r:.40}")
    size = config["sample_size"]
    for i, block in enumerate(config.get("down_block_types") or []):
        if "Attn" in str(block) and size >> i > _MAX_ATTENTION_SIZE:
            raise ConfigError(f"model attention on a {size >> i}x{size >> i} feature map is above the "
                              f"limit of {_MAX_ATTENTION_SIZE}x{_MAX_ATTENTION_SIZE}")
    import torch

    with torch.device("meta"):  # shapes only: a config that asks for terabytes costs nothing here
        n = sum(p.numel() for p in build_unet(config).parameters())
    if n * 4 > MAX_MODEL_BYTES:
        raise ConfigError(f"model has {n / 1e6:,.0f}M parameters ({n * 4 / 2 ** 30:,.1f} GiB in fp32), above the "
                          f"budget of {MAX_MODEL_BYTES / 2 ** 30:g} GiB")
    return n


def build_unet(config: dict):
    """A ``diffusers.UNet2DModel`` from a config made by ``unet_config`` (with ``augment_dim``: the
    augmentation-conditioned subclass)."""
    from diffusers import UNet2DModel

    config = dict(config)
    augment_dim = config.pop("augment_dim", 0)
    if not augment_dim:
        return UNet2DModel(**config)
    from cbdm_aug.diffusion.augment_unet import AugmentConditionedUNet

    return AugmentConditionedUNet(augment_dim, **config)


def describe_presets() -> str:
    return "\n".join(f"{name}: {p.about}" for name, p in PRESETS.items())


def preset_dict(preset: str) -> dict:
    return asdict(PRESETS[preset])
