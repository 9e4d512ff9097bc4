"""The CBDM training objective (Qin et al., CVPR 2023, "Class-Balancing Diffusion Models").

    L = L_dm + L_reg
    L_dm  = || eps - eps_theta(x_t, t, y) ||^2
    L_reg = tau * (t / T) * [ || eps_theta(x_t, t, y) - sg(eps_theta(x_t, t, y')) ||^2
                              + gamma * || sg(eps_theta(x_t, t, y)) - eps_theta(x_t, t, y') ||^2 ]

with y' ~ q(y') per sample, and L_reg applied only to samples that kept their label under the
classifier-free-guidance label drop. ``tau = 0`` is the plain class-conditional DDPM loss.

With augmentation conditioning (``diffusion.augment``), x0 arrives warped and ``augment`` carries each
image's augmentation vector: both branches, y and y', see the same x_t and the same vector.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cbdm_aug.errors import ConfigError

TARGETS = ("train", "uniform")


@dataclass(frozen=True)
class CBDMLossConfig:
    tau: float = 1.0        # weight of the class-balancing regulariser; 0 = plain DDPM
    gamma: float = 0.25     # weight of the commitment term (moves the y' branch)
    target: str = "train"   # q(y'): "train" label frequencies or "uniform"
    p_uncond: float = 0.1   # per-sample probability of dropping the label (classifier-free guidance)

    def __post_init__(self):
        if not self.tau >= 0:  # also refuses nan
            raise ConfigError(f"tau must be >= 0, got {self.tau}")
        if not self.gamma >= 0:
            raise ConfigError(f"gamma must be >= 0, got {self.gamma}")
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, got {self.target!r}")
        if not 0 <= self.p_uncond < 1:
            raise ConfigError(f"p_uncond must be in [0, 1), got {self.p_uncond}")


def target_distribution(target: str, class_counts) -> torch.Tensor:
    """q(y') as float64 probabilities (num_classes,)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if target == "uniform":
        return torch.full_like(counts, 1.0 / len(counts))
    if target == "train":
        return counts / counts.sum()
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).float().pow(2).mean(dim=tuple(range(1, a.ndim)))


def cbdm_loss(unet, x0: torch.Tensor, y: torch.Tensor, alpha_bar: torch.Tensor, q_target: torch.Tensor,
              cfg: CBDMLossConfig, null_class: int, generator: torch.Generator | None = None,
              augment: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample CBDM loss terms, each float (N,); the caller reduces ``terms["loss"]``.

    x0: float (N, C, H, W) in [-1, 1]; y: int64 (N,); alpha_bar: (T,) cumulative products of
    (1 - beta); q_target: (num_classes,) probabilities of y'. Randomness (t, eps, the label drop
    and y') comes from ``generator`` when given, so the loss is reproducible; it is drawn on the
    generator's device (a CPU generator gives the same draws on every device). Without one it is
    drawn on x0's device: on a GPU, a draw on the host and a copy would stall every step.
    augment: float (N, D) augmentation vectors of the (already warped) x0, or None: the UNet is
    called exactly as without augmentation.
    """
    n, device = len(x0), x0.device
    T = len(alpha_bar)
    rng = generator.device if generator is not None else device
    t = torch.randint(0, T, (n,), generator=generator, device=rng).to(device)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32, device=rng).to(device, x0.dtype)
    keep = (torch.rand(n, generator=generator, device=rng) >= cfg.p_uncond).to(device)
    ab = alpha_bar.to(device, torch.float32)[t].view(-1, *([1] * (x0.ndim - 1)))
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps  # q(x_t | x_0), DDPM eq. (4)
    y_in = torch.where(keep, y, torch.full_like(y, null_class))

    aug = {} if augment is None else {"augment_labels": augment}
    if cfg.tau == 0:
        eps_y = unet(x_t, t, class_labels=y_in, **aug).sample
        zero = torch.zeros(n, device=device)
        dm = _mse(eps_y, eps)
        return {"loss": dm, "dm": dm, "reg": zero, "commit": zero, "l_reg": zero, "t": t, "keep": keep}

    y_prime = torch.multinomial(q_target.to(rng, torch.float32), n, replacement=True, generator=generator).to(device)
    # Both branches in one forward pass on the concatenated batch (same x_t, t and augmentation
    # vector; labels y and y').
    if augment is not None:
        aug = {"augment_labels": torch.cat([augment, augment])}
    eps_y, eps_y_prime = unet(torch.cat([x_t, x_t]), torch.cat([t, t]),
                              class_labels=torch.cat([y_in, y_prime]), **aug).sample.chunk(2)
    dm = _mse(eps_y, eps)
    reg = _mse(eps_y, eps_y_prime.detach())        # moves only the y branch
    commit = _mse(eps_y.detach(), eps_y_prime)     # moves only the y' branch
    weight = cfg.tau * (t.float() / T) * keep.float()
    l_reg = weight * (reg + cfg.gamma * commit)
    return {"loss": dm + l_reg, "dm": dm, "reg": reg, "commit": commit, "l_reg": l_reg, "t": t,
            "keep": keep, "y_prime": y_prime}


def ddpm_alpha_bar(schedule: dict) -> torch.Tensor:
    """alpha_bar_t for t = 0..T-1 from a diffusers scheduler config (linear betas by default)."""
    from cbdm_aug.diffusion.sampling import make_scheduler

    return make_scheduler("ddpm", schedule).alphas_cumprod.clone()
