"""The plugin a classifier's training script imports: ``RealSyntheticDataset`` (``dataset.py``) joins a
real dataset to synthetic caches, ``BalancedSyntheticSampler`` (``sampler.py``, the torch adapter of
``cbdm_aug.mixing``'s rule) draws class-balanced epochs from it, and ``loaders.py`` plugs both into timm
and Lightning.

Light on purpose: this package imports torch, numpy and (when a cache is opened) h5py, never
Lightning, diffusers or click. The timm and Lightning helpers live in ``cbdm_aug.plugin.loaders``
and import those libraries inside the functions that need them.
"""
from cbdm_aug.plugin.dataset import RealSyntheticDataset
from cbdm_aug.plugin.sampler import BalancedSyntheticSampler

__all__ = ["BalancedSyntheticSampler", "RealSyntheticDataset"]
