"""cbdm-aug: Class-Balancing Diffusion Models as a data-augmentation plugin for long-tailed
image classification.

The public API is small. Importing this package is cheap: every name is resolved lazily, so
``from cbdm_aug import BalancedSyntheticSampler`` does not pull in Lightning, diffusers or click.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access (PEP 562).
_EXPORTS = {
    "load_generator": "cbdm_aug.generator.run_dir",
    "SyntheticCache": "cbdm_aug.cache.reader",
    "BalancedSyntheticSampler": "cbdm_aug.plugin.sampler",
    "RealSyntheticDataset": "cbdm_aug.plugin.dataset",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cbdm_aug' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
