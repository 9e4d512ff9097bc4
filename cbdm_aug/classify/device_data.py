"""Classifier training data held on the device: the whole training set (real images and any synthetic
cache) as one uint8 tensor there, batches gathered by index and augmented there.

On a GPU the host DataLoader (per-image crop and flip in worker processes, then a copy) cannot keep
up with a ResNet-32 step; here the host only draws the epoch's indices, with the same sampler as the
DataLoader path, so the epoch's composition (real/synthetic, per class) is the same. The augmentation
is the same in distribution, not in its random draws: crop offsets and flips come from a
``torch.Generator`` on the device, seeded by the recipe's seed.
"""
from __future__ import annotations

import numpy as np
import torch

from cbdm_aug.classify.recipe import AUGMENTS as AUGMENT_POLICIES
from cbdm_aug.devices import fits_on_device  # noqa: F401 - the trainer's auto choice, re-exported


def dataset_images(dataset) -> np.ndarray:
    """uint8 (N, H, W, C) images of every index of a training set made by ``train.build_training_set``:
    an ``ArrayDataset``, or a ``RealSyntheticDataset`` over one (real images, then each cache's,
    brought to the real images' size and channels exactly as the dataset does per item)."""
    if not hasattr(dataset, "caches"):
        return np.asarray(dataset.images)
    from cbdm_aug.cache.reader import open_cache
    from cbdm_aug.cache.schema import IMAGES

    real = np.asarray(dataset.real.images)
    out = np.empty((len(dataset), *real.shape[1:]), np.uint8)  # filled in place: no second copy
    out[:len(real)] = real
    start = len(real)
    for cache in dataset.caches:
        with open_cache(cache.path) as f:
            images = f[IMAGES]
            same = images.shape[1:] == dataset.out_shape
            for i in range(0, len(cache), 65536):
                j = min(i + 65536, len(cache))
                out[start + i:start + j] = (images[i:j] if same else  # else resized as the dataset does per item
                                            np.stack([dataset.synthetic_item(start + k) for k in range(i, j)]))
        start += len(cache)
    return out


def _random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """torchvision's ``RandomCrop(size, padding)`` for a batch: zero padding, one offset per image."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=x.device)
    rows = (oy + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (ox + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def _randaugment(x: torch.Tensor, ops: int, magnitude: int) -> torch.Tensor:
    """kornia's RandAugment on float [0, 1] images: ``ops`` operations at ``magnitude`` of 30 (the
    recipe's 0..30 scale, clamped to kornia's open interval (0, 30)). kornia draws the operations
    once per batch (torchvision per image) and the magnitudes' signs per image; grey images go
    through it as RGB and come back grey."""
    from kornia.augmentation.auto import RandAugment

    grey = x.shape[1] == 1
    out = RandAugment(n=ops, m=min(max(magnitude, 1), 29))(x.expand(-1, 3, -1, -1) if grey else x)
    return (out.mean(1, keepdim=True) if grey else out).clamp(0, 1)


def augment(x: torch.Tensor, *, crop_padding: int = 0, hflip: bool = False, policy: str = "none",
            ops: int = 2, magnitude: int = 9, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, C, H, W) in [-1, 1] on the same device, with the recipe's
    augmentation in ``train.make_transform``'s order: ``policy`` ('none' or 'randaugment', with
    ``ops`` and ``magnitude``), then a random crop after zero padding, then horizontal flips."""
    if policy not in AUGMENT_POLICIES:
        raise ValueError(f"augmentation policy must be one of {AUGMENT_POLICIES}, got {policy!r}")
    x = x.float() / 255
    if policy == "randaugment":
        x = _randaugment(x, ops, magnitude)
    if crop_padding:
        x = _random_crop(x, crop_padding, generator)
    if hflip:
        flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x * 2 - 1  # Normalize(mean 0.5, std 0.5)


class DeviceLoader:
    """The DataLoader of the device path: iterating gives one epoch of ``(x, y, is_synthetic)``
    batches, float (B, C, H, W) in [-1, 1], int64 (B,) and bool (B,), on ``device``, in the order
    ``sampler`` draws (call its ``set_epoch`` first, as with a DataLoader). ``len`` is the number of
    batches a DataLoader with ``drop_last`` would give, so the lr schedule is the same."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, sampler, batch_size: int, drop_last: bool,
                 device: torch.device, *, is_synthetic: np.ndarray | None = None, crop_padding: int = 0,
                 hflip: bool = False, policy: str = "none", ops: int = 2, magnitude: int = 9, seed: int = 0):
        if policy not in AUGMENT_POLICIES:
            raise ValueError(f"augmentation policy must be one of {AUGMENT_POLICIES}, got {policy!r}")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).to(device)
        syn = np.zeros(len(labels), bool) if is_synthetic is None else np.asarray(is_synthetic, bool)
        self.is_synthetic = torch.from_numpy(syn).to(device)
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.options = {"crop_padding": crop_padding, "hflip": hflip, "policy": policy, "ops": ops,
                        "magnitude": magnitude}
        self.generator = torch.Generator(device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64).to(self.images.device)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield (augment(self.images[idx], generator=self.generator, **self.options), self.labels[idx],
                   self.is_synthetic[idx])
