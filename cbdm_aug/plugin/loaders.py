"""Ready-made loaders: a DataLoader with timm's transforms for a timm model, and a Lightning
DataModule; both use ``RealSyntheticDataset`` and ``BalancedSyntheticSampler``.

timm and Lightning are imported inside the code that needs them: ``create_timm_loader`` imports
timm when called, and ``BalancedDataModule`` is built (importing Lightning) on first access of the
name, through the module ``__getattr__`` below.
"""
from __future__ import annotations

import sys

from torch.utils.data import DataLoader

from cbdm_aug.plugin.dataset import RealSyntheticDataset
from cbdm_aug.plugin.sampler import BalancedSyntheticSampler

__all__ = ["create_timm_loader", "timm_transform", "BalancedDataModule"]  # noqa: F822 - made by __getattr__ below


def timm_transform(model, is_training: bool = True, data_config: dict | None = None, **transform_kwargs):
    """timm's transform for ``model`` (a timm ``nn.Module`` or a model name), from its pretrained
    config (mean, std, input size, interpolation, crop); no weights are downloaded.

    ``data_config`` overrides entries of the resolved config, e.g. ``{"input_size": (3, 32, 32)}``
    for CIFAR-sized images; ``transform_kwargs`` go to ``timm.data.create_transform``
    (``auto_augment="rand-m9-mstd0.5"``, ``re_prob=0.25``, ...).
    """
    import timm.data

    if isinstance(model, str):
        import timm.models

        cfg = timm.models.get_pretrained_cfg(model)
        if cfg is None:
            raise ValueError(f"timm has no model named {model!r}")
        config = timm.data.resolve_data_config(args=dict(data_config or {}), pretrained_cfg=cfg.to_dict())
    else:
        config = timm.data.resolve_data_config(args=dict(data_config or {}), model=model)
    return timm.data.create_transform(**config, is_training=is_training, **transform_kwargs)


def create_timm_loader(model, real_dataset, caches, *, batch_size: int = 128, num_workers: int = 4,
                       seed: int = 0, data_config: dict | None = None, transform_kwargs: dict | None = None,
                       sampler_kwargs: dict | None = None, dataset_kwargs: dict | None = None,
                       decisions="auto", drop_last: bool = True, pin_memory: bool = False,
                       **loader_kwargs) -> DataLoader:
    """A training DataLoader for a timm model over real + synthetic images.

    timm's ``create_loader`` takes no sampler, so this builds the pieces itself: timm's training
    transform for ``model`` (see ``timm_transform``), a ``RealSyntheticDataset`` of
    ``real_dataset`` (PIL images) and ``caches``, and a ``BalancedSyntheticSampler`` (DDP-aware:
    it reads the rank from ``torch.distributed``). Call ``loader.sampler.set_epoch(epoch)`` before
    each epoch. Mixup and timm's GPU prefetcher are left to the training loop.

    ``decisions``: the run's per-class decisions the generated images obey (``RealSyntheticDataset``):
    ``"auto"``, the file beside each cache; ``None``, every generated image; or a path.
    """
    transform = timm_transform(model, is_training=True, data_config=data_config, **(transform_kwargs or {}))
    ds = RealSyntheticDataset(real_dataset, caches, transform=transform, **_dataset_kwargs(decisions, dataset_kwargs))
    sampler = BalancedSyntheticSampler(ds, seed=seed, **(sampler_kwargs or {}))
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0, **loader_kwargs)


def _dataset_kwargs(decisions, dataset_kwargs: dict | None) -> dict:
    kwargs = dict(dataset_kwargs or {})
    if "decisions" in kwargs and kwargs["decisions"] != decisions:
        raise ValueError("decisions given twice (as an argument and in dataset_kwargs); give it once")
    return kwargs | {"decisions": decisions}


def _lightning():
    """``lightning.pytorch`` or ``pytorch_lightning``: whichever the user already imported."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        if name in sys.modules:
            return sys.modules[name]
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl
    return pl


def _make_datamodule_class():
    pl = _lightning()

    class BalancedDataModule(pl.LightningDataModule):
        """Real + synthetic training data for a Lightning ``Trainer``.

        Use ``Trainer(use_distributed_sampler=False)``: the sampler shards itself across ranks
        (reading them from ``torch.distributed``) and Lightning calls its ``set_epoch``. If Lightning
        is left to wrap it (the default ``use_distributed_sampler=True``), this module notices and
        builds a single-replica sampler, which Lightning's ``DistributedSamplerWrapper`` then shards
        the same way and forwards ``set_epoch`` to; either way each rank gets a disjoint shard.

        ``decisions``: as ``RealSyntheticDataset``'s (default ``"auto"``: the run's decisions file beside
        each cache; ``None``: every generated image).
        """

        def __init__(self, real_train, caches, *, transform=None, batch_size: int = 128,
                     num_workers: int = 4, seed: int = 0, val_dataset=None, val_batch_size: int | None = None,
                     sampler_kwargs: dict | None = None, dataset_kwargs: dict | None = None,
                     decisions="auto"):
            super().__init__()
            self.real_train, self.caches, self.transform = real_train, caches, transform
            self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
            self.val_dataset, self.val_batch_size = val_dataset, val_batch_size or batch_size
            self.sampler_kwargs = dict(sampler_kwargs or {})
            self.dataset_kwargs = _dataset_kwargs(decisions, dataset_kwargs)
            self.train_dataset = None

        def setup(self, stage: str | None = None) -> None:
            if self.train_dataset is None:
                self.train_dataset = RealSyntheticDataset(self.real_train, self.caches,
                                                          transform=self.transform, **self.dataset_kwargs)

        def _lightning_shards(self) -> bool:
            trainer = getattr(self, "_trainer", None)
            connector = getattr(trainer, "_accelerator_connector", None)
            return bool(getattr(connector, "use_distributed_sampler", False)
                        and getattr(connector, "is_distributed", False))

        def train_dataloader(self) -> DataLoader:
            self.setup("fit")
            kwargs = dict(self.sampler_kwargs)
            if self._lightning_shards():
                kwargs.update(num_replicas=1, rank=0)
            sampler = BalancedSyntheticSampler(self.train_dataset, seed=self.seed, **kwargs)
            return DataLoader(self.train_dataset, batch_size=self.batch_size, sampler=sampler,
                              num_workers=self.num_workers, drop_last=True,
                              persistent_workers=self.num_workers > 0)

        def val_dataloader(self):
            if self.val_dataset is None:
                return []
            return DataLoader(self.val_dataset, batch_size=self.val_batch_size, num_workers=self.num_workers)

    BalancedDataModule.__module__ = __name__
    BalancedDataModule.__qualname__ = "BalancedDataModule"
    return BalancedDataModule


def __getattr__(name: str):
    # Built on first use so that importing this module does not import Lightning; cached in the
    # module so that pickle finds the class by name.
    if name == "BalancedDataModule":
        cls = globals()["BalancedDataModule"] = _make_datamodule_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
