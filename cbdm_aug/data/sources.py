"""Readers that turn a user's data into one in-memory ``LabeledImages``: image folders, npz
files (their reader is ``npz.py``) and scikit-learn's bundled 8x8 digits.

Everything is held as uint8 (N, H, W, C) in memory. That suits the datasets this project trains
generators on from scratch (CIFAR-, MNIST- and digits-sized sets); a 50k-image 32x32 RGB folder is
150 MB.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cbdm_aug.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Decoding a 20000x20000 image needs 1.2 GB; refuse anything above this many pixels instead.
MAX_IMAGE_PIXELS = 4096 * 4096


class DataError(UserError):
    """Bad user data. The message names the file or value and says what is accepted."""


@dataclass
class LabeledImages:
    """Images with integer labels and class names.

    images: uint8 array (N, H, W, C), C in {1, 3}.
    labels: int64 array (N,), values in [0, len(class_names)).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: str = ""
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise DataError(f"{self.source or 'images'}: expected uint8 (N, H, W, 1|3), "
                            f"got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise DataError(f"{self.source or 'labels'}: {len(self.labels)} labels for {len(self.images)} images")
        self.labels = self.labels.astype(np.int64, copy=False)
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(f"{self.source or 'labels'}: labels must lie in [0, {len(self.class_names) - 1}], "
                            f"found range [{self.labels.min()}, {self.labels.max()}]")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def counts(self) -> np.ndarray:
        """Images per class, int64 (num_classes,)."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, index: np.ndarray, source: str | None = None) -> "LabeledImages":
        return LabeledImages(self.images[index], self.labels[index], list(self.class_names),
                             source or self.source)


def _inside(link: Path, root: Path, skipped: Counter, outside: str) -> bool:
    """Whether symlink ``link`` resolves to somewhere inside ``root``; if not, it is counted in
    ``skipped`` as a broken one or under ``outside``, and logged."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        skipped["broken or looping symlink"] += 1
        log.warning("skipping %s: broken or looping symlink", link)
        return False
    if root.resolve() not in target.parents:
        skipped[outside] += 1
        log.warning("skipping %s: symlink points outside %s", link, root)
        return False
    return True


def _list_class_folders(root: Path, skipped: Counter) -> list[Path]:
    """The class folders of ``root``, sorted; symlinked ones only if they stay inside ``root``,
    the same rule as for symlinked image files."""
    classes = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or (p.is_symlink() and p.exists() and not p.is_dir()):
            continue  # hidden, or a link to a file: not a class folder
        if p.is_symlink() and not _inside(p, root, skipped, "class folder symlink outside the data folder"):
            continue
        if p.is_dir():
            classes.append(p)
    if not classes:
        raise DataError(f"{root}: no class folders; expected {root}/<class name>/*.png|jpg|...")
    return classes


def _list_images(class_dir: Path, root: Path, skipped: Counter) -> list[Path]:
    files = []
    for dirpath, _dirs, names in os.walk(class_dir, followlinks=False):
        for name in sorted(names):
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() and not _inside(path, root, skipped, "symlink outside the data folder"):
                continue
            files.append(path)
    return sorted(files)


def image_files(root: str | os.PathLike) -> tuple[list[str], list[list[Path]]]:
    """The class names of the image folder ``root`` and each class's image files, sorted, by the rules
    ``load_image_folder`` reads it with (hidden entries skipped, symlinks only inside ``root``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected {root}/<class name>/*.png|jpg|...)")
    skipped: Counter = Counter()
    classes = _list_class_folders(root, skipped)
    return [c.name for c in classes], [_list_images(c, root, skipped) for c in classes]


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.width * im.height > MAX_IMAGE_PIXELS:
            raise DataError(f"{path}: {im.width}x{im.height} pixels is above the limit of "
                            f"{MAX_IMAGE_PIXELS} pixels; downscale it first")
        if im.format == "JPEG":  # decode at reduced scale when the file is much larger than needed
            im.draft("RGB" if channels == 3 else "L", (size, size))
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scale to 8 bits, not clip
            arr = np.asarray(im, dtype=np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            im = Image.fromarray(np.round(arr / peak * 255).astype(np.uint8))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (0, 0, 0, 255))
            im = Image.alpha_composite(background, im)
        im = im.convert("RGB" if channels == 3 else "L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _peek(path: Path) -> tuple[tuple[int, int], str]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size, im.mode


def _bad_errors() -> tuple:
    from PIL import Image, UnidentifiedImageError

    return UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError


def _peek_chunk(paths: list[Path]) -> list[tuple]:
    """[((size, mode), None) or (None, "what went wrong")] for each path."""
    bad, out = _bad_errors(), []
    for path in paths:
        try:
            out.append((_peek(path), None))
        except bad as e:
            out.append((None, f"{type(e).__name__}: {e}"))
    return out


def _decode_chunk(paths: list[Path], size: int, channels: int) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """The images of ``paths``, uint8 (len(paths), size, size, channels) (zeros where one failed), and
    the failures as (index, kind, one-line message)."""
    bad = _bad_errors()
    out, failed = np.zeros((len(paths), size, size, channels), np.uint8), []
    for i, path in enumerate(paths):
        try:
            out[i] = _decode(path, size, channels)
        except DataError as e:
            failed.append((i, "too large", str(e)))
        except bad as e:
            failed.append((i, "unreadable image", f"{path}: cannot decode image ({type(e).__name__}: {e})"))
    return out, failed


# Reading in worker processes pays from a few thousand files on: starting them costs more than a
# small image's decode saves below that (the figures: docs/decisions.md).
PARALLEL_MIN_FILES = 5000
_CHUNK = 1000   # files per task: large enough to hide the inter-process cost, small for a smooth bar


def _default_workers(num_files: int) -> int:
    return min(os.cpu_count() or 1, 8) if num_files >= PARALLEL_MIN_FILES else 1


def _quiet_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which stops the pool


class _Pool:
    """``map(fn, args)`` in order, in this process or in ``workers`` processes with a bounded
    number of chunks in flight (so results never pile up in memory); ``close`` cancels what is left."""

    def __init__(self, workers: int):
        self.workers, self.executor = max(1, workers), None

    def map(self, fn, args: list[tuple]):
        if self.workers == 1 or len(args) < 2:
            for a in args:
                yield fn(*a)
            return
        import multiprocessing
        from collections import deque
        from concurrent.futures import ProcessPoolExecutor

        if self.executor is None:  # spawn: a clean child, whatever threads this process (torch) has started
            self.executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_quiet_worker)
        pending, todo = deque(), iter(args)
        for a in todo:
            pending.append(self.executor.submit(fn, *a))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


def load_image_folder(root: str | os.PathLike, image_size: int | None = None,
                      channels: int | None = None, skip_bad: bool = False,
                      progress: bool = False, workers: int | None = None) -> LabeledImages:
    """Read ``root/<class name>/*.{png,jpg,jpeg,bmp,webp}``; class ids follow sorted folder names.

    Images are converted to ``channels`` (1 or 3; default: 3 if any image has colour) and resized
    to ``image_size`` squares (default: the most common width). Unreadable images raise
    ``DataError`` naming the file, or are skipped and counted when ``skip_bad`` is set. Files are
    read in chunks by ``workers`` processes (default: one per core from ``PARALLEL_MIN_FILES`` files
    on; 1 reads them in this process); the result does not depend on the number.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected an image folder or an .npz file)")
    if image_size is not None and not 1 <= image_size * image_size <= MAX_IMAGE_PIXELS:
        raise DataError(f"image_size must be in [1, {int(MAX_IMAGE_PIXELS ** 0.5)}], got {image_size}")
    skipped: Counter = Counter()
    classes = _list_class_folders(root, skipped)
    files_per_class = [_list_images(c, root, skipped) for c in classes]
    empty = [c.name for c, f in zip(classes, files_per_class) if not f]
    if empty:
        raise DataError(f"{root}: class folder(s) with no images: {', '.join(map(repr, empty))}; "
                        f"remove them or add images ({', '.join(IMAGE_EXTENSIONS)})")
    files = [(label, p) for label, fs in enumerate(files_per_class) for p in fs]
    pool = _Pool(workers if workers is not None else _default_workers(len(files)))
    bar = _Bar(root.name if progress else None)
    try:
        # First pass reads only headers, to pick the default size and channel count.
        headers = _peek_headers(root, [p for _, p in files], pool, bar, skip_bad, skipped)
        if image_size is None:
            image_size = Counter(size[0] for size, _ in headers.values()).most_common(1)[0][0]
        if channels is None:
            colour = {"RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV", "PA", "RGBX"}
            channels = 3 if any(mode in colour for _, mode in headers.values()) else 1
        readable = [(label, p) for label, p in files if p in headers]
        images, keep = _decode_all(readable, image_size, channels, pool, bar, skip_bad, skipped)
    finally:
        pool.close()
        bar.close()
    labels = np.array([label for label, _ in readable], np.int64)
    if not keep.all():
        images, labels = images[keep], labels[keep]
    if not len(images):
        raise DataError(f"{root}: no readable images")
    data = LabeledImages(images, labels,
                         [c.name for c in classes], str(root), dict(skipped))
    missing = [data.class_names[i] for i in np.flatnonzero(data.counts() == 0)]
    if missing:
        raise DataError(f"{root}: no readable images left in class(es) {', '.join(map(repr, missing))}")
    return data


class _Bar:
    """One progress counter at a time for a folder's passes (none when ``name`` is None): a bar on
    a terminal, plain lines in a log."""

    def __init__(self, name: str | None):
        self.name, self.bar = name, None

    def start(self, what: str, total: int) -> None:
        self.close()
        if self.name is not None:
            from cbdm_aug.progress import counter

            self.bar = counter(total, f"{what} {self.name}", "img")

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _peek_headers(root: Path, paths: list[Path], pool: _Pool, bar: _Bar, skip_bad: bool,
                  skipped: Counter) -> dict[Path, tuple[tuple[int, int], str]]:
    """Each readable file's ((width, height), mode), from its header only."""
    bar.start("checking", len(paths))
    headers: dict[Path, tuple[tuple[int, int], str]] = {}
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    for chunk, peeked in zip(chunks, pool.map(_peek_chunk, [(c,) for c in chunks])):
        for path, (head, error) in zip(chunk, peeked):
            if error is None:
                headers[path] = head
            elif not skip_bad:
                raise DataError(f"{path}: cannot read image ({error}); pass --skip-bad to skip unreadable files")
            else:
                skipped["unreadable image"] += 1
                log.warning("skipping unreadable image %s", path)
        bar.update(len(chunk))
    if not headers:
        raise DataError(f"{root}: no readable images")
    return headers


def _decode_all(readable: list[tuple[int, Path]], image_size: int, channels: int, pool: _Pool, bar: _Bar,
            skip_bad: bool, skipped: Counter) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, size, size, channels) images, which of them decoded), filled chunk by chunk into
    one array, so the images are never held twice."""
    bar.start("reading", len(readable))
    images = np.empty((len(readable), image_size, image_size, channels), np.uint8)
    keep = np.ones(len(readable), bool)
    chunks = [[p for _, p in readable[i:i + _CHUNK]] for i in range(0, len(readable), _CHUNK)]
    for k, (decoded, failed) in enumerate(pool.map(_decode_chunk, [(c, image_size, channels) for c in chunks])):
        i = k * _CHUNK
        images[i:i + len(decoded)] = decoded
        for j, kind, message in failed:
            if not skip_bad:
                raise DataError(message + ("" if kind == "too large" else "; pass --skip-bad to skip unreadable files"))
            skipped[kind] += 1
            keep[i + j] = False
            log.warning("skipping %s", message)
        bar.update(len(decoded))
    return images, keep


def load_digits() -> LabeledImages:
    """scikit-learn's bundled 8x8 digits (1,797 images), scaled from 0..16 to uint8 0..255."""
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    return LabeledImages(x, d.target.astype(np.int64), [str(i) for i in range(10)], "sklearn-digits")


def class_names_of(spec: str | os.PathLike, split: str = "train") -> list[str] | None:
    """The class names ``open_data(spec, split)`` would give, read without decoding an image: an image
    folder's class folder names, an npz's ``class_names`` (or its label range). None where that cannot
    be told cheaply (a missing or malformed source): ``open_data`` then says what is wrong."""
    if str(spec) == "digits":
        return [str(i) for i in range(10)]
    path = Path(spec)
    try:
        if path.is_dir():
            return [c.name for c in _list_class_folders(path, Counter())]
        with np.load(path, allow_pickle=False) as npz:
            if "class_names" in npz:
                return [str(n) for n in npz["class_names"]]
            from cbdm_aug.data.npz import NPZ_KEYS

            keys = next((k for k in NPZ_KEYS.get(split, ()) if k[0] in npz and k[1] in npz), None)
            return None if keys is None else [str(i) for i in range(int(npz[keys[1]].max()) + 1)]
    except Exception:  # noqa: BLE001 - anything unreadable is open_data's to report, with its own message
        return None


def open_data(spec: str | os.PathLike, split: str = "train", image_size: int | None = None,
              channels: int | None = None, skip_bad: bool = False,
              progress: bool = False) -> LabeledImages:
    """Open ``spec``: ``digits`` (scikit-learn's bundled set), an ``.npz`` file or an image folder.

    Every source is brought to ``image_size`` squares and ``channels`` (default: the data's): an
    image folder as it decodes each file, arrays with ``convert_images``.
    """
    if image_size is not None and not 1 <= image_size * image_size <= MAX_IMAGE_PIXELS:
        raise DataError(f"image_size must be in [1, {int(MAX_IMAGE_PIXELS ** 0.5)}], got {image_size}")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if str(spec) == "digits" or str(spec).endswith(".npz"):
        from cbdm_aug.data.convert import convert_images
        from cbdm_aug.data.npz import load_npz

        data = load_digits() if str(spec) == "digits" else load_npz(spec, split=split)
        data.images = convert_images(data.images, image_size or data.image_size, channels or data.channels)
    else:
        data = load_image_folder(spec, image_size=image_size, channels=channels,
                                 skip_bad=skip_bad, progress=progress)
    if data.num_classes < 2 or np.count_nonzero(data.counts()) < 2:
        raise DataError(f"{data.source}: found a single class; a class-conditional model needs at least 2")
    return data
