"""Classifier training data held on the device: the whole training set (real images and any synthetic
cache) as one uint8 tensor there, batches gathered by index and augmented there.

On a GPU the host DataLoader (per-image crop and flip in worker processes, then a copy) cannot keep
up with a ResNet-32 step. On a CPU the DataLoader's per-image transforms, in the training process,
took about half of each arm's time (a py-spy profile): over a whole ``run`` the batch path took the
four arms from 6.7 to 4.0 minutes (docs/decisions.md). Here the host only draws the epoch's indices, with the same sampler as the
DataLoader path, so the epoch's composition (real/synthetic, per class) is the same. The augmentation
is the same in distribution, not in its random draws: crop offsets and flips come from a
``torch.Generator`` on the device, seeded by the recipe's seed. RandAugment is torchvision's, image by
image, where the batch is on the CPU (the DataLoader path's own policy), and kornia's, whole batches
at once, on an accelerator, where a per-image loop would leave it idle.
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
    for k, cache in enumerate(dataset.caches):
        rows = dataset.cache_rows(k)  # None: every image; else the rows the decisions keep
        used = len(cache) if rows is None else len(rows)
        with open_cache(cache.path) as f:
            images = f[IMAGES]
            if images.shape[1:] != dataset.out_shape:  # resized as the dataset does per item
                for i in range(0, used, 65536):
                    j = min(i + 65536, used)
                    out[start + i:start + j] = np.stack([dataset.synthetic_item(start + q) for q in range(i, j)])
            else:
                keep = None
                if rows is not None:
                    keep = np.zeros(len(cache), bool)
                    keep[rows] = True
                at = start
                for i in range(0, len(cache), 65536):  # whole blocks read, the unused rows dropped in memory
                    block = images[i:min(i + 65536, len(cache))]
                    block = block if keep is None else block[keep[i:i + len(block)]]
                    out[at:at + len(block)] = block
                    at += len(block)
        start += used
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


def _randaugment_per_image(x: torch.Tensor, ops: int, magnitude: int) -> torch.Tensor:
    """torchvision's RandAugment on uint8 (N, C, H, W) images with the DataLoader path's semantics
    (``train.make_transform``): each image draws its own ``ops`` operations and signs. The images that
    drew the same operation and sign go through torchvision's kernel together, one call per group
    instead of one per image (the kernels work per image: a contrast's mean, an equalisation's
    histogram), so a batch costs at most 2 x 14 calls per operation whatever its size. Uses the
    policy's own operation table and kernel dispatch (``_AUGMENTATION_SPACE``,
    ``_apply_image_or_video_transform``), which torchvision keeps private: the tests pin the result to
    the public transform's, image by image."""
    from torchvision.transforms import v2

    policy = v2.RandAugment(num_ops=ops, magnitude=magnitude)
    names = list(policy._AUGMENTATION_SPACE)
    height, width = x.shape[-2:]
    for _ in range(ops):
        drawn = torch.randint(len(names), (len(x),))
        negative = torch.rand(len(x)) <= 0.5
        out = x.clone()
        for k in drawn.unique().tolist():
            magnitudes_fn, signed = policy._AUGMENTATION_SPACE[names[k]]
            magnitudes = magnitudes_fn(policy.num_magnitude_bins, height, width)
            m = float(magnitudes[policy.magnitude]) if magnitudes is not None else 0.0
            for neg in ((False, True) if signed and magnitudes is not None else (None,)):
                sel = (drawn == k) if neg is None else (drawn == k) & (negative == neg)
                if sel.any():
                    out[sel] = policy._apply_image_or_video_transform(
                        x[sel], names[k], -m if neg else m, interpolation=policy.interpolation, fill=policy._fill)
        x = out
    return x


def augment(x: torch.Tensor, *, crop_padding: int = 0, hflip: bool = False, policy: str = "none",
            ops: int = 2, magnitude: int = 9, generator: torch.Generator | None = None,
            policy_mask: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, C, H, W) in [-1, 1] on the same device, with the recipe's
    augmentation in ``train.make_transform``'s order: ``policy`` ('none' or 'randaugment', with
    ``ops`` and ``magnitude``; per image by torchvision on the uint8 images on a CPU, as the DataLoader
    path does, per batch by kornia elsewhere), then a random crop after zero padding, then horizontal
    flips. ``policy_mask``: bool (N,), the images the policy applies to (None: all), for a recipe that
    RandAugments its real images only."""
    if policy not in AUGMENT_POLICIES:
        raise ValueError(f"augmentation policy must be one of {AUGMENT_POLICIES}, got {policy!r}")
    randaugment = policy == "randaugment"
    if randaugment and x.device.type == "cpu":
        x = _apply_to(x, policy_mask, lambda v: _randaugment_per_image(v, ops, magnitude))
    x = x.float() / 255
    if randaugment and x.device.type != "cpu":
        x = _apply_to(x, policy_mask, lambda v: _randaugment(v, ops, magnitude))
    if crop_padding:
        x = _random_crop(x, crop_padding, generator)
    if hflip:
        flip = torch.rand(len(x), generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x * 2 - 1  # Normalize(mean 0.5, std 0.5)


def _apply_to(x: torch.Tensor, mask: torch.Tensor | None, fn) -> torch.Tensor:
    """``fn`` on the images ``mask`` selects (None: all of them), the others unchanged."""
    if mask is None:
        return fn(x)
    x = x.clone()
    if mask.any():
        x[mask] = fn(x[mask])
    return x


class DeviceLoader:
    """The DataLoader of the device path: iterating gives one epoch of ``(x, y, is_synthetic)``
    batches, float (B, C, H, W) in [-1, 1], int64 (B,) and bool (B,), on ``device``, in the order
    ``sampler`` draws (call its ``set_epoch`` first, as with a DataLoader). ``len`` is the number of
    batches a DataLoader with ``drop_last`` would give, so the lr schedule is the same."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, sampler, batch_size: int, drop_last: bool,
                 device: torch.device, *, is_synthetic: np.ndarray | None = None, crop_padding: int = 0,
                 hflip: bool = False, policy: str = "none", ops: int = 2, magnitude: int = 9, seed: int = 0,
                 policy_on_synthetic: bool = True):
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
        self.policy_on_synthetic = policy_on_synthetic  # False: the policy RandAugments the real images only

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64).to(self.images.device)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            syn = self.is_synthetic[idx]
            mask = None if self.policy_on_synthetic or self.options["policy"] == "none" else ~syn
            yield (augment(self.images[idx], generator=self.generator, policy_mask=mask, **self.options),
                   self.labels[idx], syn)
