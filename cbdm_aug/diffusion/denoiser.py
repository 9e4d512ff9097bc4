"""The UNet as the samplers call it on a GPU: under bf16 autocast and/or ``torch.compile``.

``Denoiser`` wraps a UNet without copying it and answers the same call,
``denoiser(x_t, t, class_labels=y).sample``, so every sampler in ``sampling`` takes it in place of
the UNet. It returns float32 eps whatever the autocast dtype, so the schedulers' update rules run
in float32 as before. On a CPU neither option is on by default (``choose``): both are slower there.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

PRECISIONS = ("fp32", "bf16")


class Denoiser(torch.nn.Module):
    """``unet`` under bf16 autocast (``precision='bf16'``) and optionally compiled; same call and
    output as the UNet: ``.sample`` is float32 (N, C, H, W)."""

    def __init__(self, unet: torch.nn.Module, precision: str = "fp32", compile: bool = False):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.unet, self.precision = unet, precision
        # Not a submodule: the wrapper shares the UNet's weights and must not rename them.
        self.__dict__["_call"] = torch.compile(unet, dynamic=False) if compile else unet

    def forward(self, x: torch.Tensor, t, class_labels: torch.Tensor):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            eps = self.__dict__["_call"](x, t, class_labels=class_labels).sample
        return SimpleNamespace(sample=eps.float())


def choose(device, precision: str | None = None, compile: bool | None = None) -> tuple[str, bool]:
    """Resolve ``None`` (auto) settings for ``device``: bf16 and compiled on CUDA, fp32 eager elsewhere."""
    on_cuda = torch.device(device).type == "cuda"
    return (precision or ("bf16" if on_cuda else "fp32"), on_cuda if compile is None else compile)
