"""Machine, versions and commit, recorded next to every benchmark result."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def environment() -> dict:
    import torch

    def version(mod):
        # Read from the installed metadata, not by importing: importing Lightning alone costs seconds.
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            return dist_version(mod.replace("_", "-"))
        except PackageNotFoundError:  # a missing optional package is reported as such
            return None

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "platform": platform.platform()},
        "versions": {"torch": torch.__version__,
                     **{m: version(m) for m in ("diffusers", "pytorch_lightning", "timm", "h5py", "numpy")}},
        "commit": commit, "dirty_tree": dirty,
    }


def commit_text(env: dict) -> str:
    """The commit as results files print it: ``abc1234``, or ``abc1234 (dirty tree)`` when the tree had changes."""
    return f"{env['commit']}{' (dirty tree)' if env['dirty_tree'] else ''}"
