"""Generator metrics on features: FID, KID, improved precision/recall, per class, and memorisation.

Features are computed once per image set (see ``features``) and then handed to torchmetrics'
``FrechetInceptionDistance`` and ``KernelInceptionDistance`` through a pass-through feature
module, so every metric sees the same features and the network runs once per image.

Improved precision and recall (Kynkaenniemi et al., NeurIPS 2019) are written here because
torchmetrics has none: each real (generated) feature gets a radius, the distance to its k-th
nearest real (generated) neighbour; precision is the share of generated features inside some real
ball, recall the share of real features inside some generated ball. It is a few vectorised
``torch.cdist`` calls, done in chunks so memory stays O(chunk x N).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from cbdm_aug.evaluate.criteria import NEAR_COPY_RATIO  # noqa: F401 - the metric's default, re-read as M.NEAR_COPY_RATIO

DEFAULT_K = 3
# A generated image is a near-copy when it is closer to its nearest training image than
# NEAR_COPY_RATIO times that training image's distance to its own nearest same-class neighbour.
# Relative, because classes differ in how close their images naturally sit (a "1" is near every
# other "1"); an exact copy has ratio 0. For a class with a single training image the absolute
# RMS pixel distance NEAR_COPY_FALLBACK (0..1 scale, ~13 grey levels) is used instead.
NEAR_COPY_FALLBACK = 0.05


class _Passthrough(torch.nn.Module):
    """A torchmetrics "feature extractor" whose input already is the (N, D) features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self._dummy = torch.nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@contextlib.contextmanager
def _seeded(seed: int):
    # torchmetrics' KID draws its subsets from torch's global RNG; fork it so the caller's state
    # is untouched and the result is reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to float (N, D) real and (M, D) fake features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 real and 2 generated images, got {len(real)} and {len(fake)}")
    metric = FrechetInceptionDistance(feature=_Passthrough(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid(real: torch.Tensor, fake: torch.Tensor, subset_size: int = 1000, subsets: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the Kernel Inception Distance (polynomial kernel, unbiased MMD^2) over
    ``subsets`` random subsets of ``min(subset_size, N, M)`` features each."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 real and 2 generated images, got {len(real)} and {len(fake)}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=_Passthrough(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with _seeded(seed):
        mean, std = metric.compute()
    return float(mean), float(std)


def kth_neighbour_distance(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """(N,) distance from each row of ``x`` to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself sits at distance 0
    return torch.cat(out)


def _covered(query: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """(Q,) bool: whether each query lies inside at least one ball (centre, radius)."""
    out = []
    for i in range(0, len(query), chunk):
        out.append((torch.cdist(query[i:i + chunk], centres) <= radii[None]).any(dim=1))
    return torch.cat(out)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = DEFAULT_K,
                     chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of float (N, D) real and (M, D)
    generated features, with k-nearest-neighbour radii. Both are fractions in [0, 1]."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} real and generated images, "
                         f"got {len(real)} and {len(fake)}")
    real, fake = real.float(), fake.float()
    precision = _covered(fake, real, kth_neighbour_distance(real, k, chunk), chunk).float().mean()
    recall = _covered(real, fake, kth_neighbour_distance(fake, k, chunk), chunk).float().mean()
    return float(precision), float(recall)


def nearest_distance(query: torch.Tensor, ref: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of float (Q, D) ``query``: the L2 distance to and index of its nearest row of ``ref``."""
    dists, idx = [], []
    for i in range(0, len(query), chunk):
        d, j = torch.cdist(query[i:i + chunk].float(), ref.float()).min(dim=1)
        dists.append(d)
        idx.append(j)
    return torch.cat(dists), torch.cat(idx)


def class_slices(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, bounds): ``order[bounds[c]:bounds[c + 1]]`` are the indices of class c's items, increasing.
    One sort for all classes, where a mask per class would pass over the labels once per class."""
    order = np.argsort(labels, kind="stable")
    return order, np.searchsorted(np.asarray(labels)[order], np.arange(num_classes + 1))


def pixel_vectors(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, H*W*C) scaled so L2 distance is the RMS pixel difference in [0, 1]."""
    flat = torch.from_numpy(np.ascontiguousarray(images).reshape(len(images), -1)).float()
    return flat / (255.0 * flat.shape[1] ** 0.5)


def memorisation(fake_pixels: torch.Tensor, fake_feats: torch.Tensor, train_pixels: torch.Tensor,
                 train_feats: torch.Tensor, ratio: float = NEAR_COPY_RATIO) -> dict:
    """Nearest same-class training image of each generated image of one class.

    Inputs are ``pixel_vectors`` and features of the class's generated and training images.
    Returns per generated image: ``pixel`` (RMS distance, [0, 1] units) and ``feature`` distance to
    the nearest training image, its index ``nearest``, ``sibling`` (that training image's distance
    to its nearest other training image) and ``near_copy`` (pixel < ratio * sibling; see
    ``NEAR_COPY_RATIO``); and ``train_nn_median_pixel``, the class's median sibling distance.
    """
    d_pix, idx = nearest_distance(fake_pixels, train_pixels)
    if len(train_feats):
        d_feat, _ = nearest_distance(fake_feats, train_feats)
    else:
        d_feat = torch.full_like(d_pix, float("nan"))
    if len(train_pixels) > 1:
        sibling_all = kth_neighbour_distance(train_pixels, 1, 1024)
        sibling = sibling_all[idx]
        near = d_pix < ratio * sibling
        train_median = float(sibling_all.median())
    else:
        sibling = torch.full_like(d_pix, float("nan"))
        near = d_pix < NEAR_COPY_FALLBACK
        train_median = float("nan")
    return {"pixel": d_pix, "feature": d_feat, "nearest": idx, "sibling": sibling, "near_copy": near,
            "train_nn_median_pixel": train_median}


def summarise(values) -> dict:
    """JSON-ready median/mean/min of a 1-d tensor or array (NaN-free values only)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    v = v[~torch.isnan(v)]
    if len(v) == 0:
        return {"median": None, "mean": None, "min": None}
    return {"median": float(v.median()), "mean": float(v.mean()), "min": float(v.min())}


def tail_classes(train_counts, share: float = 0.3) -> list[int]:
    """The rarest ``share`` of classes (at least one), rarest first."""
    counts = np.asarray(train_counts)
    n = max(1, int(round(share * len(counts))))
    return [int(c) for c in np.argsort(counts, kind="stable")[:n]]
