"""Classification losses for long-tailed training: cross-entropy, Balanced Softmax and logit
adjustment. Each returns the unreduced per-sample loss; the training loop reduces it.

Both long-tail losses add a multiple of the log class prior log pi_y = log(n_y / sum_j n_j) to the
logits inside the softmax during training only; at test time the raw logits are used:

- Balanced Softmax (Ren et al., 2020, eq. 4): l = -log( n_y exp(z_y) / sum_j n_j exp(z_j) ),
  i.e. cross-entropy on z + log pi.
- Logit-adjusted loss (Menon et al., 2021, eq. 10): cross-entropy on z + tau * log pi; tau = 1
  is the paper's default and then equals Balanced Softmax.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES = ("ce", "balanced-softmax", "logit-adjustment")


def log_prior(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """log pi_j = log(n_j / sum n), float32 (C,). Every class needs at least one training image."""
    n = torch.as_tensor(counts, dtype=torch.float32)
    if n.ndim != 1 or (n <= 0).any():
        raise ValueError(f"class counts must be a 1-D list of positive numbers, got {n.tolist()}")
    return n.log() - n.sum().log()


def logit_adjusted_loss(logits: torch.Tensor, y: torch.Tensor, counts, tau: float = 1.0,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """Menon et al. (2021) eq. 10: CE(z + tau * log pi, y). logits float (B, C), y int64 (B,) -> (B,)."""
    adjusted = logits + tau * log_prior(counts).to(logits)
    return F.cross_entropy(adjusted, y, reduction="none", label_smoothing=label_smoothing)


def balanced_softmax_loss(logits: torch.Tensor, y: torch.Tensor, counts,
                          label_smoothing: float = 0.0) -> torch.Tensor:
    """Ren et al. (2020) eq. 4: -log(n_y e^{z_y} / sum_j n_j e^{z_j}). Shapes as ``logit_adjusted_loss``."""
    return logit_adjusted_loss(logits, y, counts, 1.0, label_smoothing)


class ClassifierLoss(nn.Module):
    """One of ``LOSSES`` with its class prior held as a buffer (so it follows ``.to(device)``).

    ``forward(logits (B, C), y (B,)) -> (B,)``: unreduced loss.
    """

    def __init__(self, kind: str, counts: Sequence[int], tau: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
        self.kind, self.label_smoothing = kind, label_smoothing
        self.tau = {"ce": 0.0, "balanced-softmax": 1.0}.get(kind, tau)
        self.register_buffer("log_prior", log_prior(counts))

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits.dtype), y,
                               reduction="none", label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, tau={self.tau}"
