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
    is for the model, its activations and the optimizer): on CUDA its free memory, on a CPU the host's
    available memory (``host_memory_available``); False where neither can be asked."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    elif device.type == "cpu":
        free = host_memory_available()
    else:
        return False
    return free is not None and nbytes <= free // 10


def host_memory_available() -> int | None:
    """Bytes of host memory available to a new allocation: Linux's MemAvailable (free memory plus the
    page cache it may reclaim), else the free pages POSIX reports; None where neither is known."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
