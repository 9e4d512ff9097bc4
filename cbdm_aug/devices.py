"""Choosing a torch device: the one place where 'auto' becomes cuda or cpu. Library code follows
its tensors; only the commands and trainers call this."""
from __future__ import annotations

from cbdm_aug.errors import ConfigError


def resolve_device(name: str | None = "auto"):
    """``None``/``'auto'`` -> cuda if available, else cpu; otherwise ``name`` checked for validity."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here; use auto or cpu")
    return device


def fits_on_device(nbytes: int, device) -> bool:
    """Whether ``nbytes`` of training data take at most a tenth of ``device``'s free memory (the rest
    is for the model, its activations and the optimizer); False on devices with no such query (a
    CPU keeps the host data path unless asked)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 10
