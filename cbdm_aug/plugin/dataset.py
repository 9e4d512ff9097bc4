"""``RealSyntheticDataset``: a real map-style dataset joined to synthetic caches, yielding both in
the real dataset's own form (PIL image, tensor or array), with labels aligned by class name.

Indices ``[0, len(real))`` are the real images, in the real dataset's order; the caches follow,
one after another. ``labels`` and ``is_synthetic`` cover every index without loading an image,
which is what ``BalancedSyntheticSampler`` needs.

A cache made by ``cbdm-aug run`` has the run's per-class decisions beside it (``decisions.json``,
``cbdm_aug.mixing``). They are honoured by default: a class the run refused (share 0) gets none of its
generated images, and a fractional share is the sampler's default bound for that class
(``synthetic_share``). ``decisions=None`` keeps every generated image.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from cbdm_aug import mixing

__all__ = ["RealSyntheticDataset", "real_labels", "real_class_names"]

log = logging.getLogger(__name__)


def real_labels(dataset, labels: Callable | None = None) -> np.ndarray:
    """int64 (N,) labels of a real dataset, found without loading images.

    ``labels(dataset)``, when given, is the user's explicit answer and wins. Otherwise, in order:
    the dataset's ``targets`` (torchvision datasets, ``DatasetFolder``), an image-folder dataset's
    ``samples`` (path, label) pairs, or a ``torch.utils.data.Subset``'s indices into its parent's
    labels (recursively). Anything else is a ``TypeError``: labels are never guessed by loading.
    """
    if labels is not None:
        if not callable(labels):
            raise TypeError(f"labels must be a callable dataset -> sequence of ints, got {type(labels).__name__}")
        out = np.asarray(labels(dataset))
        source = "the labels callable"
    elif getattr(dataset, "targets", None) is not None:
        targets = dataset.targets
        out = np.asarray(targets.cpu() if hasattr(targets, "cpu") else targets)
        source = f"{type(dataset).__name__}.targets"
    elif getattr(dataset, "samples", None) is not None:
        out = np.fromiter((s[1] for s in dataset.samples), dtype=np.int64, count=len(dataset.samples))
        source = f"{type(dataset).__name__}.samples"
    elif hasattr(dataset, "indices") and hasattr(dataset, "dataset"):
        out = real_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
        source = "Subset indices"
    else:
        raise TypeError(f"cannot find the labels of a {type(dataset).__name__} without loading its "
                        "images: it has no `targets`, no image-folder `samples` and is not a Subset; "
                        "pass labels=lambda ds: <int per index> (e.g. lambda ds: ds.labels)")
    if out.ndim != 1 or not (np.issubdtype(out.dtype, np.integer) or out.size == 0):
        raise TypeError(f"labels from {source} must be a 1-D sequence of ints, got {out.dtype} {out.shape}")
    try:
        n = len(dataset)
    except TypeError:
        n = len(out)
    if len(out) != n:
        raise ValueError(f"{source} gives {len(out)} labels for a dataset of {n} items")
    return out.astype(np.int64, copy=False)


def real_class_names(dataset) -> list[str] | None:
    """Class names of a real dataset from ``classes`` or ``class_to_idx`` (through Subsets)."""
    if getattr(dataset, "classes", None) is not None:
        return [str(c) for c in dataset.classes]
    c2i = getattr(dataset, "class_to_idx", None)
    if c2i:
        names = sorted(c2i, key=c2i.get)
        if [c2i[n] for n in names] != list(range(len(names))):
            raise ValueError(f"class_to_idx must map onto 0..{len(names) - 1}, got {c2i}")
        return [str(n) for n in names]
    if hasattr(dataset, "indices") and hasattr(dataset, "dataset"):
        return real_class_names(dataset.dataset)
    return None


def _decided(path, shares: dict[str, float], out: list[str], dropped: int) -> str:
    """One line: what a decisions file did to a cache's images (``out``: the refused classes it held images of)."""
    part = [n for n, s in shares.items() if 0 < s < 1]
    text = f"honouring the decisions in {path}"
    if out:
        text += (f": {'class' if len(out) == 1 else 'classes'} {', '.join(out)} "
                 f"{'was' if len(out) == 1 else 'were'} refused generated images, so "
                 f"{'its' if len(out) == 1 else 'their'} {dropped} generated images are dropped")
    if part:
        text += f"; {', '.join(f'{n} at most {s:g}' for n, s in shares.items() if 0 < s < 1)} of its places"
    return text + (" (decisions=None keeps every generated image)" if out or part else "")


def _form_of(sample) -> tuple[str, tuple[int, int, int], object]:
    """(kind, (H, W, C), dtype) of one real image: kind is 'pil', 'tensor' or 'array'."""
    import torch
    from PIL import Image

    if isinstance(sample, Image.Image):
        channels = {"1": 1, "L": 1, "P": 3, "RGB": 3, "RGBA": 4}.get(sample.mode, len(sample.getbands()))
        return "pil", (sample.height, sample.width, channels), None
    if isinstance(sample, torch.Tensor):
        shape = tuple(sample.shape) if sample.ndim == 3 else (1, *sample.shape)
        return "tensor", (shape[1], shape[2], shape[0]), sample.dtype
    if isinstance(sample, np.ndarray):
        shape = sample.shape if sample.ndim == 3 else (*sample.shape, 1)
        return "array", tuple(shape), sample.dtype
    raise TypeError(f"real images must be PIL images, tensors or numpy arrays, got {type(sample).__name__}")


class RealSyntheticDataset(Dataset):
    """Real images followed by synthetic cache images, as one map-style dataset.

    Args:
        real_dataset: any map-style dataset of ``(image, label)`` (torchvision datasets,
            ``ImageFolder``, ``Subset``...). Its own transform, if any, runs first; its output
            form decides the form of the synthetic images.
        caches: a cache path, a ``SyntheticCache``, or a list of them.
        transform: applied to every image, real and synthetic; settable (timm assigns it).
        target_transform: applied to every label.
        labels: optional callable ``real_dataset -> ints`` overriding label discovery
            (see ``real_labels``).
        class_names: names of the real classes, in label order, when the real dataset has no
            ``classes``/``class_to_idx``.
        resize: ``False`` (a size mismatch is an error), ``True`` (resize synthetic images to the
            real size) or an ``(H, W)`` size.
        convert: whether synthetic images may lose information to match the real channel
            count. Grey synthetic images always become RGB when the real ones are (lossless:
            ``ImageFolder`` yields RGB even from grey files); RGB -> grey needs ``convert=True``.
        decisions: which per-class decisions the generated images obey: ``"auto"`` (default) the
            decisions file beside each cache, where there is one (``cbdm-aug run`` writes it); a path
            to a decisions file, for every cache; ``None``, none: every generated image is used. A
            refused class (share 0) gets no generated image; the others' shares are in
            ``synthetic_share``.

    Items are ``(image, label)``: for a real set of PIL images, a PIL image of the same mode;
    for tensors, a CHW tensor (float in [0, 1] as ``ToTensor`` gives, or uint8 if the real
    tensors are uint8); for numpy arrays, uint8 HWC. ``labels`` int64 (N,), ``is_synthetic``
    bool (N,) and ``class_names`` describe all indices. ``synthetic_share``: ``{class name: bound on
    its synthetic share}`` from the decisions (1.0 where a file names no bound), or None where no
    decisions apply; ``BalancedSyntheticSampler`` uses it when given no ``max_synthetic_share``.
    """

    def __init__(self, real_dataset, caches, transform=None, target_transform=None,
                 labels: Callable | None = None, class_names: Sequence[str] | None = None,
                 resize: bool | tuple[int, int] = False, convert: bool = False, decisions="auto"):
        from cbdm_aug.cache.reader import SyntheticCache

        self.real = real_dataset
        self.transform = transform
        self.target_transform = target_transform
        if isinstance(caches, (str, os.PathLike, SyntheticCache)):
            caches = [caches]
        self.caches = [c if isinstance(c, SyntheticCache) else SyntheticCache(c) for c in caches]

        real_y = real_labels(real_dataset, labels)
        names = list(class_names) if class_names is not None else real_class_names(real_dataset)
        if names is None:
            raise ValueError(f"the real dataset ({type(real_dataset).__name__}) has no `classes` or "
                             "`class_to_idx`, so its classes cannot be matched to the cache by name; "
                             "pass class_names=[...] in label order"
                             + (f" (the cache's are {self.caches[0].class_names})" if self.caches else ""))
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        if len(real_y) and (real_y.min() < 0 or real_y.max() >= len(names)):
            raise ValueError(f"real labels span [{real_y.min()}, {real_y.max()}] but there are "
                             f"{len(names)} class names")
        self.class_names = names

        if len(real_dataset) == 0:
            raise ValueError("the real dataset is empty")
        self._kind, real_shape, self._dtype = _form_of(real_dataset[0][0])
        self._mode = None
        if self._kind == "pil":
            self._mode = real_dataset[0][0].mode
        self.out_shape = self._target_shape(real_shape, resize, convert)  # (H, W, C) of every item

        self.synthetic_share, self._rows = self._decide(decisions)
        self.labels = np.concatenate([real_y, *(self._cache_labels(k) for k in range(len(self.caches)))])
        self.is_synthetic = np.zeros(len(self.labels), dtype=bool)
        self.is_synthetic[len(real_y):] = True
        self._offsets = np.cumsum([len(real_y), *(len(c) if r is None else len(r) for c, r in zip(self.caches, self._rows))])
        self._starts = [int(x) for x in self._offsets]  # Python ints: cheap to compare per item

    def _check_names(self, cache) -> None:
        names = self.class_names
        extra = [n for n in cache.class_names if n not in names]
        missing = [n for n in names if n not in cache.class_names]
        if extra or missing:
            raise ValueError(f"{cache.path}: class names differ from the real dataset's: "
                             + "; ".join(s for s in (
                                 f"classes {extra} are not in the real dataset" if extra else "",
                                 f"classes {missing} are missing from the cache" if missing else "") if s)
                             + f" (real: {names}, cache: {cache.class_names})")

    def _cache_labels(self, k: int) -> np.ndarray:
        """int64 labels (in the real dataset's class order) of cache ``k``'s images this dataset uses."""
        cache, rows = self.caches[k], self._rows[k]
        index = {n: i for i, n in enumerate(self.class_names)}
        own = cache.labels if rows is None else cache.labels[rows]
        return np.array([index[n] for n in cache.class_names], dtype=np.int64)[own]

    def _decide(self, decisions) -> tuple[dict[str, float] | None, list[np.ndarray | None]]:
        """(per-class share bounds or None, per cache the rows it keeps or None for all): each cache obeys
        its decisions file (``mixing.decisions_file``); a class refused by it loses that cache's images."""
        shares, rows = None, []
        for cache in self.caches:
            self._check_names(cache)
            path = mixing.decisions_file(cache.path, decisions)
            if path is None:
                rows.append(None)
                continue
            own = mixing.read_shares(path)
            unknown = [n for n in own if n not in self.class_names]
            if unknown:
                raise mixing.DecisionsError(f"decisions file {path}: classes {unknown} are not in the dataset "
                                            f"({self.class_names}); is it the decisions of another run?")
            shares = {n: min(own.get(n, 1.0), (shares or {}).get(n, 1.0)) for n in self.class_names}
            out = [cache.class_names.index(n) for n in mixing.refused(own)]
            keep = ~np.isin(cache.labels, out)
            rows.append(None if keep.all() else np.flatnonzero(keep))
            dropped = [cache.class_names[k] for k in np.unique(cache.labels[~keep])]
            log.info("%s: %s", cache.path, _decided(path, own, dropped, int((~keep).sum())))
        return shares, rows

    def _target_shape(self, real_shape, resize, convert) -> tuple[int, int, int]:
        """The (H, W, C) synthetic images are brought to; checks each cache against the real set."""
        H, W, C = real_shape
        if resize is not True and resize is not False:
            H, W = (int(s) for s in resize)
        for cache in self.caches:
            h, w, c = cache.image_shape
            if (h, w) != (H, W) and resize is False:
                raise ValueError(f"{cache.path}: synthetic images are {h}x{w} but real images are "
                                 f"{H}x{W}; pass resize=True to resize the synthetic ones")
            if c != C and C not in (1, 3):
                raise ValueError(f"cannot convert {c}-channel synthetic images to {C} channels")
            if c != C and not convert and not (c == 1 and C == 3):  # grey -> RGB loses nothing
                raise ValueError(f"{cache.path}: synthetic images have {c} channel(s) but real images "
                                 f"have {C}; pass convert=True to convert the synthetic ones (this "
                                 f"drops their colour)")
        return H, W, C

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def cache_rows(self, k: int) -> np.ndarray | None:
        """The rows of cache ``k`` this dataset uses, in order (int64, increasing), or None for all of them:
        the decisions leave out the classes whose images are not used."""
        return self._rows[k]

    def synthetic_item(self, i: int):
        """Image ``i`` of the combined set (a synthetic one), brought to the real images' size,
        channels and kind (PIL, array or tensor), without the transform."""
        k = 1 if len(self.caches) == 1 else int(np.searchsorted(self._offsets, i, side="right"))
        row, rows = i - self._starts[k - 1], self._rows[k - 1]
        image, _ = self.caches[k - 1][row if rows is None else int(rows[row])]
        H, W, C = self.out_shape
        if self._kind == "pil" and image.shape == (H, W, 3) and self._mode == "RGB":  # the common case
            from PIL import Image

            return Image.fromarray(image)
        if image.shape != (H, W, C) or self._kind == "pil":
            from PIL import Image

            pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            if (pil.height, pil.width) != (H, W):
                pil = pil.resize((W, H), Image.BICUBIC)
            if self._kind == "pil":
                return pil.convert(self._mode) if pil.mode != self._mode else pil
            pil = pil.convert("L" if C == 1 else "RGB")
            image = np.asarray(pil).reshape(H, W, C)
        if self._kind == "array":
            return image
        import torch

        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return x if self._dtype == torch.uint8 else x.to(self._dtype or torch.float32).div_(255)

    def __getitem__(self, i):
        i = int(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} items")
        i %= n
        if i < self._starts[0]:
            image = self.real[i][0]
        else:
            image = self.synthetic_item(i)
        label = int(self.labels[i])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    def __repr__(self) -> str:
        return (f"RealSyntheticDataset({int(self._offsets[0])} real + {int((self.is_synthetic).sum())} "
                f"synthetic images, {len(self.class_names)} classes)")
