"""Non-leaking geometric augmentation for diffusion training (Karras et al., NeurIPS 2022, "Elucidating
the Design Space of Diffusion-Based Generative Models", app. C; the `--augm` ("ADA") variant of CBDM).

Each training image gets a random affine warp, each op applied with probability ``p``, and the UNet is
conditioned on a 9-dimensional vector that describes the warp. Sampling passes no vector (the zero
vector: no warp), so the model learns the warped images as a separate, labelled distribution and the
warps do not leak into the generated images, while the extra views keep a 5-image class from being
memorised. The ops and their parameter laws follow k-diffusion's ``KarrasAugmentationPipeline``
(MIT): x-flip, y-flip, isotropic scale 2^(0.2 N(0,1)), rotation U(-pi, pi), anisotropic scale
2^(+-0.2 N(0,1)) along a direction U(-pi, pi), translation N(0, 1/8 of the side) per axis.

The vector, as in the reference: [xflip, yflip, log2-scale / 0.2, cos(rot) - 1, sin(rot),
aniso * cos(dir), aniso * sin(dir), tx, ty]; every entry is 0 when its op was not applied.

Flips are only allowed where the data are mirror-symmetric (``flips=True``: natural images, not digits
or letters). The warp runs batched on the tensors' device (``affine_grid`` / ``grid_sample``, bicubic,
reflected borders, as the reference's order-3 ``skimage`` warp with mode 'reflect'); images no op
touched are returned bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cbdm_aug.errors import ConfigError

AUGMENT_DIM = 9
FLIPS = ("xflip", "yflip")
GEOMETRIC = ("scale", "rotate", "aniso", "translate")
OPS = FLIPS + GEOMETRIC


@dataclass(frozen=True)
class AugmentConfig:
    p: float = 0.0                      # probability of each op per image; 0 = no augmentation
    ops: tuple[str, ...] = GEOMETRIC    # the ops drawn (a subset of OPS)
    scale_base: float = 2 ** 0.2        # isotropic scale factor base^N(0,1) (k-diffusion's a_scale)
    aniso_base: float = 2 ** 0.2        # anisotropic factors base^(+-N(0,1)) (a_aniso)
    translate_std: float = 1 / 8        # translation std as a fraction of the image side (a_trans)

    def __post_init__(self):
        if not 0 <= self.p <= 1:  # also refuses nan
            raise ConfigError(f"--augment must be a probability in [0, 1], got {self.p}")
        unknown = set(self.ops) - set(OPS)
        if unknown:
            raise ConfigError(f"unknown augmentation ops {sorted(unknown)}; choose from {OPS}")
        object.__setattr__(self, "ops", tuple(o for o in OPS if o in self.ops))

    @classmethod
    def for_data(cls, p: float, flips: bool) -> "AugmentConfig":
        """The op set this data allows: flips only for mirror-symmetric (natural) images."""
        return cls(p, FLIPS + GEOMETRIC if flips else GEOMETRIC)

    def to_dict(self) -> dict:
        return {"p": self.p, "ops": list(self.ops), "dim": AUGMENT_DIM if self.p > 0 else 0}


def _rot(theta: torch.Tensor) -> torch.Tensor:
    c, s = theta.cos(), theta.sin()
    z, o = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).view(-1, 3, 3)


def _diag(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    z, o = torch.zeros_like(sx), torch.ones_like(sx)
    return torch.stack([sx, z, z, z, sy, z, z, z, o], -1).view(-1, 3, 3)


def _shift(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    z, o = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack([o, z, tx, z, o, ty, z, z, o], -1).view(-1, 3, 3)


def sample_augment(n: int, size: tuple[int, int], cfg: AugmentConfig,
                   generator: torch.Generator | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` warps: (mat float32 (n, 3, 3), the forward map in pixel coordinates centred on the
    image, x right and y down; cond float32 (n, 9), the conditioning vector). ``size`` = (H, W).

    Every image draws the same numbers whatever ``cfg.ops`` holds (an op left out is zeroed), so the
    same generator state gives the same warps of the ops that are on."""
    h, w = size
    rng = generator.device if generator is not None else device
    u = torch.rand(n, 10, generator=generator, device=rng)   # 6 op coins, 2 flip bits, 2 angles
    g = torch.randn(n, 4, generator=generator, device=rng)   # scale, aniso, tx, ty
    u, g = u.to(device), g.to(device)
    on = {op: (u[:, i] < cfg.p).float() * (op in cfg.ops) for i, op in enumerate(OPS)}
    a0 = (u[:, 6] < 0.5).float() * on["xflip"]
    a1 = (u[:, 7] < 0.5).float() * on["yflip"]
    a2 = g[:, 0] * on["scale"]
    a3 = (u[:, 8] * 2 * math.pi - math.pi) * on["rotate"]
    a4 = (u[:, 9] * 2 * math.pi - math.pi) * on["aniso"]
    a5 = g[:, 1] * on["aniso"]
    a6, a7 = g[:, 2] * on["translate"], g[:, 3] * on["translate"]
    s = torch.as_tensor(cfg.scale_base, device=device) ** a2
    k = torch.as_tensor(cfg.aniso_base, device=device) ** a5
    mat = (_diag(1 - 2 * a0, torch.ones_like(a0)) @ _diag(torch.ones_like(a1), 1 - 2 * a1) @ _diag(s, s)
           @ _rot(-a3) @ _rot(a4) @ _diag(k, 1 / k) @ _rot(-a4)
           @ _shift(cfg.translate_std * w * a6, cfg.translate_std * h * a7))
    cond = torch.stack([a0, a1, a2, a3.cos() - 1, a3.sin(), a5 * a4.cos(), a5 * a4.sin(), a6, a7], 1)
    return mat, cond


def warp(x: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """Apply forward maps ``mat`` (n, 3, 3) from ``sample_augment`` to images x float (n, C, H, W):
    bicubic, reflected at the borders. Images whose map is the identity come back unchanged."""
    n, _, h, w = x.shape
    to_norm = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], device=x.device, dtype=torch.float32))
    # grid_sample wants, for each output pixel, where to read the input: the inverse map, in the
    # [-1, 1] coordinates of align_corners=False (pixel centre i at (2i + 1) / W - 1).
    inv = torch.linalg.inv(to_norm @ mat.float() @ torch.linalg.inv(to_norm))
    grid = F.affine_grid(inv[:, :2, :], [n, x.shape[1], h, w], align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bicubic", padding_mode="reflection", align_corners=False)
    moved = (mat - torch.eye(3, device=mat.device)).abs().flatten(1).amax(1) > 0
    return torch.where(moved.view(-1, 1, 1, 1), out.to(x.dtype), x)


def augment(x0: torch.Tensor, cfg: AugmentConfig,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp a batch x0 float (N, C, H, W) in [-1, 1]; returns (warped x0, cond float32 (N, 9))."""
    mat, cond = sample_augment(len(x0), tuple(x0.shape[-2:]), cfg, generator, device=x0.device)
    return warp(x0, mat), cond
