"""``BalancedSyntheticSampler``: class-balanced epochs that fill each class's deficit of real
images with synthetic ones.

What an epoch is. The sampler draws an *epoch plan* of ``num_samples`` dataset indices, then
each rank takes its shard of it. Class ``c`` gets ``k_c = round(p_c * num_samples)`` places
(``p`` is the target distribution; the rounding is largest-remainder, so the counts sum exactly).
The places of class ``c`` are filled in this order:

1. its real images, each once (a random subset of them if ``k_c`` is smaller than their number);
2. its synthetic images, each at most once, up to the bounds: ``min_real_share`` f keeps at least
   ``f * k_c`` of the class's places for its real images, and ``max_synthetic_share`` bounds the
   synthetic share of the epoch or of each class;
3. the rest by repeating its real images (or its synthetic ones if the class has no real image).

Why a real floor: without it a 3-image class with 71 of 74 places filled by generated images saw
its real images (and their augmented views) 1/25 as often as without them, and lost accuracy even
where its generated images were not copies (docs/decisions.md).

The plan is then shuffled, so a batch is a uniform random draw from it: with the uniform target
every class is equally likely in every position. Randomness comes only from a numpy Generator
seeded with ``(seed, epoch)``; nothing reads the global RNG.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from cbdm_aug import mixing
from cbdm_aug.mixing import MIN_REAL_SHARE

__all__ = ["BalancedSyntheticSampler"]

log = logging.getLogger(__name__)


def _dist_world() -> tuple[int, int]:
    """(num_replicas, rank) from torch.distributed when it is initialised, else (1, 0)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _dataset_labels(dataset) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(labels int64 (N,), is_synthetic bool (N,), class names or None) of a dataset."""
    if hasattr(dataset, "labels") and hasattr(dataset, "is_synthetic"):
        labels = np.asarray(dataset.labels, dtype=np.int64)
        synthetic = np.asarray(dataset.is_synthetic, dtype=bool)
    else:
        from cbdm_aug.plugin.dataset import real_labels

        try:
            labels = real_labels(dataset)
        except TypeError as e:
            raise TypeError(f"{e}; for the sampler, wrap the dataset first: "
                            "RealSyntheticDataset(ds, caches, labels=...)") from None
        synthetic = np.zeros(len(labels), dtype=bool)
    if labels.ndim != 1 or synthetic.shape != labels.shape:
        raise ValueError(f"dataset labels must be 1-D with one is_synthetic flag each; got labels "
                         f"{labels.shape} and is_synthetic {synthetic.shape}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"dataset labels must be >= 0, found {labels.min()}")
    names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    return labels, synthetic, (list(names) if names is not None else None)


def _decided_shares(dataset) -> dict[str, float] | None:
    """The per-class bounds a dataset carries from its decisions file (``RealSyntheticDataset.synthetic_share``),
    where one of them is fractional; a refused class (share 0) already has no generated image in the dataset,
    and a share of 1 bounds nothing."""
    shares = getattr(dataset, "synthetic_share", None)
    if not shares or all(s in (0.0, 1.0) for s in shares.values()):
        return None
    log.info("max_synthetic_share from the dataset's decisions file: %s",
             ", ".join(f"{n} {s:g}" for n, s in shares.items() if 0 < s < 1))
    return dict(shares)


class BalancedSyntheticSampler(Sampler[int]):
    """Class-balanced sampler over real + synthetic images, seeded, epoch-aware and DDP-aware.

    Args:
        dataset: a ``RealSyntheticDataset`` (anything with ``labels`` and ``is_synthetic``), or
            any real dataset whose labels ``real_labels`` finds (``targets``, ImageFolder
            ``samples``, a ``Subset``): then every index is real and the sampler oversamples.
        target: class distribution of the epoch: ``"uniform"`` (default), a vector of length C,
            or a ``{class name: weight}`` mapping (unnamed classes get 0). Normalised to sum 1.
        num_samples: epoch length over all ranks. Default ``C * max_c n_real_c``: every class gets
            as many places as the largest real class has images (the "balanced epoch").
        max_synthetic_share: ``None`` (the default: the per-class shares the dataset carries from
            its decisions file, ``RealSyntheticDataset.synthetic_share``, where one is fractional;
            else no bound); a float in [0, 1] bounding the synthetic share of the whole epoch (met
            with the smallest common per-class cap); or a per-class vector / ``{class name: share}``
            mapping bounding each class's share.
        min_real_share: a float in [0, 1], a per-class vector or a ``{class name: share}`` mapping:
            at least this share of each class's places go to its real images (each once, then
            repeats), so generated images are added beside a class's real draws and never crowd
            them out. Default 0.5: a class's real images are drawn at least half as often as
            without synthetic images. ``None`` or 0 is no floor. A class with no real image is
            exempt (it has nothing to repeat).
        seed: the plan of epoch ``e`` is a pure function of ``(seed, e)``.
        num_replicas, rank: the DDP world; read from ``torch.distributed`` when initialised and
            not given, else 1 and 0.
        drop_last: ``False`` pads the plan by repeating its start so every rank gets
            ``ceil(num_samples / num_replicas)`` indices (like ``DistributedSampler``); ``True``
            drops the tail instead.

    ``len(sampler)`` is the length of this rank's shard. Call ``set_epoch(e)`` before each epoch.
    """

    def __init__(self, dataset, target="uniform", num_samples: int | None = None,
                 max_synthetic_share=None, min_real_share=MIN_REAL_SHARE, seed: int = 0,
                 num_replicas: int | None = None,
                 rank: int | None = None, drop_last: bool = False):
        labels, synthetic, names = _dataset_labels(dataset)
        C = len(names) if names is not None else (int(labels.max()) + 1 if len(labels) else 0)
        if len(labels) == 0 or C == 0:
            raise ValueError("cannot sample from an empty dataset")
        if labels.max() >= C:
            raise ValueError(f"label {labels.max()} out of range for {C} class names")
        self.class_names = names
        self.num_classes = C
        # One index array grouped by class, real before synthetic: the pools are slices of it.
        self._order = np.lexsort((synthetic, labels)).astype(np.int64 if len(labels) >= 2**31 else np.int32)
        self.real_counts = np.bincount(labels[~synthetic], minlength=C)
        self.synthetic_counts = np.bincount(labels[synthetic], minlength=C)
        self.target = self._target(target)
        self.num_samples = self._epoch_length(num_samples)
        if max_synthetic_share is None:
            max_synthetic_share = _decided_shares(dataset)
        self._share_overall, self._share_class = self._share_bounds(max_synthetic_share)
        self._real_floor = self._floor(min_real_share)
        self._set_world(num_replicas, rank, drop_last)
        self.seed = int(seed)
        self.epoch = 0

    def _target(self, target) -> np.ndarray:
        """The epoch's class distribution (C,), summing to 1."""
        C, names = self.num_classes, self.class_names
        if isinstance(target, str):
            if target != "uniform":
                raise ValueError(f"target must be 'uniform', a vector of {C} weights or a "
                                 f"{{class name: weight}} mapping, got {target!r}")
            p = np.ones(C)
        else:
            p = mixing.per_class(target, C, names, "target", 0.0)
        if not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
            raise ValueError(f"target weights must be finite, >= 0 and not all 0, got {p.tolist()}")
        p = p / p.sum()
        empty = np.flatnonzero((p > 0) & (self.real_counts + self.synthetic_counts == 0))
        if len(empty):
            raise ValueError(f"classes {[self._name(c) for c in empty]} have target > 0 but no images")
        return p

    def _epoch_length(self, num_samples) -> int:
        if num_samples is None:
            n_max = self.real_counts.max() or (self.real_counts + self.synthetic_counts).max()
            num_samples = int(self.num_classes * n_max)
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return int(num_samples)

    def _share_bounds(self, max_synthetic_share) -> tuple[float | None, np.ndarray | None]:
        """(overall bound or None, per-class bounds (C,) or None)."""
        if max_synthetic_share is None:
            return None, None
        if isinstance(max_synthetic_share, (int, float)):
            overall, per_class = float(max_synthetic_share), None
            bounds = np.array([overall])
        else:
            overall = None
            per_class = bounds = mixing.per_class(max_synthetic_share, self.num_classes, self.class_names,
                                                  "max_synthetic_share", 1.0)
        if not np.all((bounds >= 0) & (bounds <= 1)):
            raise ValueError(f"max_synthetic_share must lie in [0, 1], got {max_synthetic_share!r}")
        no_real = np.flatnonzero((self.target > 0) & (self.real_counts == 0))
        if len(no_real):
            raise ValueError(f"classes {[self._name(c) for c in no_real]} have no real images, so "
                             "their synthetic share cannot be bounded; give them target 0 or drop "
                             "max_synthetic_share")
        return overall, per_class

    def _floor(self, min_real_share) -> np.ndarray:
        """The real floor per class (C,); 0 for a class without real images (it has nothing to repeat)."""
        C = self.num_classes
        if min_real_share is None:
            return np.zeros(C)
        floor = (np.full(C, float(min_real_share)) if isinstance(min_real_share, (int, float))
                 else mixing.per_class(min_real_share, C, self.class_names, "min_real_share", 0.0))
        if not np.all((floor >= 0) & (floor <= 1)):
            raise ValueError(f"min_real_share must lie in [0, 1], got {min_real_share!r}")
        return np.where(self.real_counts > 0, floor, 0.0)

    def _set_world(self, num_replicas, rank, drop_last) -> None:
        if num_replicas is None or rank is None:
            world, world_rank = _dist_world()
            num_replicas = world if num_replicas is None else num_replicas
            rank = world_rank if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
        self.num_replicas, self.rank, self.drop_last = int(num_replicas), int(rank), bool(drop_last)
        if drop_last and self.num_samples < self.num_replicas:
            raise ValueError(f"num_samples={self.num_samples} < num_replicas={self.num_replicas} with drop_last")

    def _name(self, c: int) -> str:
        return repr(self.class_names[c]) if self.class_names is not None else str(c)

    def set_epoch(self, epoch: int) -> None:
        """Select the plan of epoch ``epoch``; call it before iterating each epoch."""
        self.epoch = int(epoch)

    def quotas(self, epoch: int | None = None) -> dict[str, np.ndarray]:
        """Per-class composition of an epoch (``mixing.compose``): int64 (C,) arrays ``total``, ``real``
        (distinct real images), ``synthetic`` (distinct synthetic images) and ``repeated``."""
        return self._composition(self._rng(epoch))

    def _rng(self, epoch: int | None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch)])

    def _composition(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return mixing.compose(self.target, self.num_samples, self.real_counts, self.synthetic_counts, rng,
                              real_floor=self._real_floor, share_class=self._share_class,
                              share_overall=self._share_overall)

    def plan(self, epoch: int | None = None) -> np.ndarray:
        """The whole epoch plan (all ranks, before padding): ``num_samples`` shuffled indices."""
        rng = self._rng(epoch)
        plan = mixing.fill(self._composition(rng), self._order, self.real_counts, self.synthetic_counts, rng)
        assert len(plan) == self.num_samples
        return plan

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.num_replicas
        return math.ceil(self.num_samples / self.num_replicas)

    def shard(self, epoch: int | None = None) -> np.ndarray:
        """This rank's indices of an epoch: positions ``rank, rank + R, ...`` of the padded plan."""
        plan = self.plan(epoch)
        total = len(self) * self.num_replicas
        if total > len(plan):
            plan = np.resize(plan, total)  # pads by repeating from the start, as DistributedSampler
        return plan[self.rank:total:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard().tolist())

    def __repr__(self) -> str:
        return (f"BalancedSyntheticSampler(num_classes={self.num_classes}, num_samples={self.num_samples}, "
                f"seed={self.seed}, epoch={self.epoch}, rank={self.rank}/{self.num_replicas})")
