"""Classifier networks and the loader of a trained one: CIFAR-style ResNets (He et al., 2016,
section 4.2) registered in timm's model registry, and ``load_classifier_run``. A module of its own
below ``classify`` and ``cache``, so both import it and neither imports the other.

timm ships ImageNet networks only: their 7x7 stride-2 stem and max-pool shrink a 32x32 image to
8x8 before the first block. The long-tail literature (LDAM, Balanced Softmax, CBDM's downstream
tables) uses the CIFAR ResNet instead: a 3x3 stride-1 stem, three stages of basic blocks with
16/32/64 channels, the 2nd and 3rd stages downsampling by 2, global average pooling and one linear
layer. Depth = 6n + 2 for n blocks per stage.

Importing this module registers them with timm's builder (``build_model_with_cfg``). No weights exist to
download: ``pretrained=True`` needs a local file, ``pretrained_cfg_overlay=dict(file=PATH)``, which timm loads
as for any of its own models (``cbdm_aug.classify.pretrained``):

- ``resnet32_cifar``: n = 5, 0.46M parameters; the network of the CIFAR-10/100-LT tables.
- ``resnet20_cifar``: n = 3, 0.27M parameters.
- ``resnet8_cifar``: n = 1, 0.08M parameters; the small variant for 28x28 (MNIST) and 8x8
  (digits) on a CPU.

The stem never downsamples, so every variant takes any input of 4x4 pixels or more: 8x8 ends at
2x2, 28x28 at 7x7 and 32x32 at 8x8 before pooling. ``in_chans`` and ``num_classes`` work as for
any timm model: ``timm.create_model('resnet32_cifar', num_classes=100, in_chans=3)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from cbdm_aug.errors import UserError

__all__ = ["CifarResNet"]

WIDTHS = (16, 32, 64)


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual. A downsampling block uses the parameter-free
    "option A" shortcut (stride-2 subsampling, zero-padded channels), as in He et al. and LDAM."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images. Input float (B, in_chans, H, W); output logits (B, num_classes).

    Follows timm's classifier interface (``num_classes``, ``num_features``, ``forward_features``,
    ``forward_head``, ``reset_classifier``) so timm helpers work on it.
    """

    def __init__(self, blocks_per_stage: int = 5, num_classes: int = 10, in_chans: int = 3,
                 widths: tuple[int, int, int] = WIDTHS, drop_rate: float = 0.0):
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, c_in = [], widths[0]
        for stage, c_out in enumerate(widths):
            for b in range(blocks_per_stage):
                layers.append(_BasicBlock(c_in, c_out, 2 if stage > 0 and b == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.num_features = c_in
        self.fc = nn.Linear(c_in, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():  # Kaiming init, as in the reference CIFAR ResNets
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(F.relu(self.bn1(self.conv1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _cfg() -> dict:
    # what timm's loader reads: the stem it adapts to other channel counts and the head it drops for other
    # classes; no url or hub id, so nothing is ever downloaded (pretrained=True without a file fails in timm)
    return {"num_classes": 10, "input_size": (3, 32, 32), "first_conv": "conv1", "classifier": "fc",
            "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


default_cfgs = generate_default_cfgs({name: _cfg() for name in ("resnet32_cifar", "resnet20_cifar", "resnet8_cifar")})


def _create(variant: str, blocks_per_stage: int, pretrained: bool, **kwargs) -> CifarResNet:
    if pretrained and not (kwargs.get("pretrained_cfg_overlay") or {}).get("file"):
        raise ValueError(f"{variant} has no pretrained weights to download; give a local file: "
                         "pretrained_cfg_overlay=dict(file=PATH) (run --pretrained, recipe model.pretrained_file)")
    return build_model_with_cfg(CifarResNet, variant, pretrained, blocks_per_stage=blocks_per_stage, **kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-32 (n = 5), the CIFAR-10/100-LT network of LDAM and its successors."""
    return _create("resnet32_cifar", 5, pretrained, **kwargs)


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 (n = 3)."""
    return _create("resnet20_cifar", 3, pretrained, **kwargs)


@register_model
def resnet8_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-8 (n = 1): small enough to train on 28x28 or 8x8 images on a CPU in minutes."""
    return _create("resnet8_cifar", 1, pretrained, **kwargs)


class ClassifierRunError(UserError):
    """A folder that does not hold a loadable ``train-classifier`` run."""


def load_classifier_run(run_dir, device="cpu") -> tuple[nn.Module, dict]:
    """The frozen, eval-mode classifier of a ``train-classifier`` run folder (``model.pt`` with weights
    only, no pickled code, and ``metrics.json``), and that run's metrics.json content. Its input is
    float (N, C, H, W) in [-1, 1] at ``info["data"]["image_size"]`` and ``["channels"]``."""
    import json
    from pathlib import Path

    import timm

    run_dir = Path(run_dir)
    weights, metrics = run_dir / "model.pt", run_dir / "metrics.json"
    if not weights.is_file() or not metrics.is_file():
        raise ClassifierRunError(f"{run_dir}: not a classifier run folder (needs model.pt and metrics.json, "
                                 f"as `cbdm-aug train-classifier` or `evaluate-generator` write)")
    try:
        ckpt = torch.load(weights, map_location="cpu", weights_only=True)
        info = json.loads(metrics.read_text())
        model = timm.create_model(ckpt["model"], pretrained=False, num_classes=ckpt["num_classes"],
                                  in_chans=ckpt["in_chans"])
        model.load_state_dict(ckpt["state_dict"])
        info["model"] = ckpt["model"]
    except Exception as e:  # noqa: BLE001 - any failure here means "unusable classifier run"
        raise ClassifierRunError(f"{weights}: cannot load the classifier ({type(e).__name__}: {e})") from None
    return model.eval().requires_grad_(False).to(device), info
