"""Export a synthetic cache (and optionally the real images) as files that other trainers read.

    folder       DIR/<class>/<id>.png                     torchvision ImageFolder, timm's folder reader
    tar          DIR/images.tar, members <class>/<id>.png  timm's tar reader
    webdataset   DIR/shard-000000.tar, ... (<id>.png, <id>.cls) and DIR/_info.json
                                                           the webdataset package, timm's ``wds/`` reader

Beside the images: ``DIR/manifest.csv``, one row per image (which are generated, and each one's
provenance), and ``DIR/export.json``, the cache's whole provenance record, the settings and the command.

Resumable. ``export.json`` is written first with ``"status": "running"`` and says ``"complete"`` only
at the end; a rerun with the same settings checks what is there against the cache, pixel by pixel,
and writes the rest. Shards and the JSON/CSV files are written whole (``atomic.py``). The one tar is
appended in place, and a rerun cuts it back to its last whole, correct member. A folder's images are
written in place too, not through ``atomic_path``: that scans the folder for stale temporaries on
every call, which is quadratic over a 100k-image class folder; a file torn by a kill fails the
rerun's pixel check and is written again.

Light: h5py, numpy and PIL; the worker processes import nothing else.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import shutil
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cbdm_aug.atomic import atomic_path, write_text_atomic
from cbdm_aug.cache.reader import SyntheticCache
from cbdm_aug.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("folder", "tar", "webdataset")
TAR_NAME = "images.tar"
INFO_NAME = "_info.json"  # where timm's wds reader looks for the split's shards and sample count
MANIFEST_COLUMNS = ("path", "key", "class", "label", "kind", "source", "generator_sha256", "sampler", "steps",
                    "guidance", "seed", "filter_score", "near_copy")
# Real files kept byte for byte, and their extension in the export (timm's wds reader keys on jpg, png, webp;
# its folder reader takes png, jpg, jpeg); real images in other formats are re-encoded as PNG.
KEPT_EXTENSIONS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}
CHUNK = 256            # images per worker task: large enough to hide the inter-process cost
PARALLEL_MIN = 2000    # below this many images, worker processes cost more than they save


class ExportError(UserError):
    """An export that cannot start: a bad option, class name or output folder."""


@dataclass(frozen=True)
class ExportSettings:
    """What an export writes. ``classes`` None means all; ``per_class`` caps each class (real images
    first, then generated ones) for a class-balanced set; ``shuffle_seed`` orders the webdataset samples
    (class-sorted shards would give a streaming trainer's shuffle buffer one class at a time)."""

    format: str = "folder"
    shard_size: int = 5000
    real: str | None = None
    classes: tuple[str, ...] | None = None
    per_class: int | None = None
    shuffle_seed: int = 0

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.shard_size < 1:
            raise ExportError(f"--shard-size must be at least 1, got {self.shard_size}")
        if self.per_class is not None and self.per_class < 1:
            raise ExportError(f"--per-class must be at least 1, got {self.per_class}")
        if self.classes is not None and not self.classes:
            raise ExportError("--classes names no class; give a comma-separated list of class names")


class Item(NamedTuple):
    """One exported image. ``ref``: a cache index (synthetic), a file ``Path`` or a uint8 HWC array (real)."""

    key: str
    name: str   # class name
    label: int  # index among the exported classes
    kind: str   # "synthetic" or "real"
    ref: object
    ext: str    # ".png", or a kept real file's own extension


def _check_names(names: list[str]) -> None:
    for n in names:
        if not n or n in (".", "..") or n.startswith(".") or "/" in n or "\\" in n or "\0" in n:
            raise ExportError(f"class name {n!r} cannot be a folder name (empty, hidden or with a slash); "
                              "rename the class")


def _pick_classes(names: list[str], wanted: tuple[str, ...] | None) -> list[str]:
    """The exported classes, in the cache's order."""
    if wanted is None:
        return list(names)
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ExportError(f"--classes: {', '.join(map(repr, unknown))} not in the cache, whose classes are "
                          f"{', '.join(names[:20])}{', ...' if len(names) > 20 else ''}")
    return [n for n in names if n in wanted]


def _open_real(spec: str, cache_names: list[str], classes: list[str]) -> dict[str, list]:
    """Each exported class's real images as (index in the real set, file path for an image folder or
    uint8 HWC array otherwise)."""
    from cbdm_aug.data.sources import image_files, open_data

    if spec != "digits" and Path(spec).is_dir():
        names, files = image_files(spec)
        starts = np.cumsum([0, *map(len, files)])
        refs = {n: list(enumerate(f, start=int(s))) for n, f, s in zip(names, files, starts)}
    else:
        data = open_data(spec, split="train")
        names = data.class_names
        refs = {n: [(int(i), data.images[i]) for i in np.flatnonzero(data.labels == c)] for c, n in enumerate(names)}
    missing = [n for n in classes if n not in names]
    extra = [n for n in names if n not in cache_names] if classes == cache_names else []  # else --classes chose
    if extra or missing:
        raise ExportError(f"--real {spec}: its classes differ from the cache's: "
                          + "; ".join(s for s in (f"{extra} are not in the cache" if extra else "",
                                                  f"{missing} are missing" if missing else "") if s))
    return {n: refs[n] for n in classes}


def _evenly(n: int, k: int) -> np.ndarray:
    """``k`` of ``range(n)`` spread evenly (all of them when ``k >= n``)."""
    return np.arange(n) if k >= n else np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def select(syn: SyntheticCache, settings: ExportSettings) -> tuple[list[str], list[Item]]:
    """(exported class names, the images to export): per class, its real images then its generated
    ones, up to ``per_class`` in all."""
    classes = _pick_classes(syn.class_names, settings.classes)
    _check_names(classes)
    real = _open_real(settings.real, syn.class_names, classes) if settings.real else {}
    width = max(6, len(str(len(syn) - 1)))
    items = []
    for label, name in enumerate(classes):
        refs = real.get(name, [])
        chosen = _evenly(len(refs), settings.per_class if settings.per_class else len(refs))
        for j in chosen:
            k, ref = refs[j]
            ext = KEPT_EXTENSIONS.get(ref.suffix.lower(), ".png") if isinstance(ref, Path) else ".png"
            items.append(Item(f"real-{k:0{width}d}", name, label, "real", ref, ext))
        index = np.flatnonzero(syn.labels == syn.class_names.index(name))
        if settings.per_class is not None:
            index = index[:max(0, settings.per_class - len(chosen))]
        items += [Item(f"syn-{i:0{width}d}", name, label, "synthetic", int(i), ".png") for i in index]
    return classes, items


# -- encoding and checking one image ---------------------------------------------------------------

def _synthetic_images(cache_path, items) -> dict[int, np.ndarray]:
    index = sorted(it.ref for it in items if it.kind == "synthetic")
    if not index:
        return {}
    with SyntheticCache(cache_path) as syn:
        return dict(zip(index, syn.batch(index)))


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(data: bytes, convert: bool = False) -> np.ndarray:
    """uint8 (H, W, C) pixels of an encoded image; ``convert`` brings other modes to grey or RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        x = np.asarray(im.convert("L" if im.mode in ("1", "L") else "RGB") if convert else im)
    return x[..., None] if x.ndim == 2 else x


def _is_kept_file(it: Item) -> bool:
    return isinstance(it.ref, Path) and it.ref.suffix.lower() in KEPT_EXTENSIONS


def _image_of(it: Item, images: dict) -> np.ndarray:
    if it.kind == "synthetic":
        return images[it.ref]
    if isinstance(it.ref, Path):  # a real file in another format (BMP, WebP), re-encoded as PNG
        return _pixels(it.ref.read_bytes(), convert=True)
    return it.ref


def _encoded(it: Item, images: dict) -> bytes:
    return it.ref.read_bytes() if _is_kept_file(it) else _png(_image_of(it, images))


def _matches(data: bytes, it: Item, images: dict) -> bool:
    """Whether ``data`` is what the export writes for ``it``: the same bytes for a kept real file, the
    same pixels otherwise (a torn or foreign file does not match)."""
    if _is_kept_file(it):
        return data == it.ref.read_bytes()
    try:
        return np.array_equal(_pixels(data), _image_of(it, images))
    except Exception:  # noqa: BLE001 - anything that does not decode is not a finished image
        return False


# -- folder ------------------------------------------------------------------------------------------

def _put_file(path: Path, it: Item, images: dict, link: bool) -> str:
    """Write one image of the folder; returns how: linked, copied or written."""
    path.unlink(missing_ok=True)
    if link and _is_kept_file(it):
        try:
            os.link(it.ref, path)
            return "linked"
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES):
                raise
    try:
        with open(path, "wb") as f:
            f.write(_encoded(it, images))
    except OSError as e:
        path.unlink(missing_ok=True)  # never a torn image left under its final name
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    return "copied" if _is_kept_file(it) else "written"


def _folder_task(cache_path: str, root: str, items: list[Item], link: bool) -> Counter:
    images, done = _synthetic_images(cache_path, items), Counter()
    for it in items:
        path = Path(root) / it.name / f"{it.key}{it.ext}"
        if path.exists():
            if _matches(path.read_bytes(), it, images):
                done["checked"] += 1
                continue
            done["rewritten"] += 1
        done[_put_file(path, it, images, link)] += 1
    return done


def _write_folder(cache_path: Path, out: Path, items: list[Item], workers: int, bar, link: bool = True) -> Counter:
    for name in dict.fromkeys(it.name for it in items):
        (out / name).mkdir(exist_ok=True)
    done = Counter()
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    for chunk, result in zip(chunks, _run(_folder_task, [(str(cache_path), str(out), c, link) for c in chunks],
                                          workers)):
        done.update(result)
        bar.update(len(chunk))
    return done


# -- one tar, appended in place ------------------------------------------------------------------------

def _encode_task(cache_path: str, items: list[Item]) -> list[bytes]:
    images = _synthetic_images(cache_path, items)
    return [_encoded(it, images) for it in items]


def _member(it: Item, folder: bool) -> str:
    return f"{it.name}/{it.key}{it.ext}" if folder else f"{it.key}{it.ext}"


def _add(tf: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tf.addfile(info, io.BytesIO(data))


def _whole_members(tf: tarfile.TarFile, size: int, items: list[Item]) -> list[tarfile.TarInfo]:
    """The tar's first members while they are whole and named as ``items`` are, in order."""
    found = []
    while len(found) < len(items):
        try:
            m = tf.next()
        except tarfile.TarError:  # a torn header
            break
        if m is None or m.name != _member(items[len(found)], True) or m.offset_data + m.size > size:
            break
        found.append(m)
    return found


def _resume_tar(path: Path, cache_path: Path, items: list[Item]) -> tuple[int, int]:
    """(items already in the tar and correct, byte offset where the rest goes). Stops at the first
    member that is torn, out of order or not what the export writes."""
    try:
        tf = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the `with` below; opening may fail alone
    except tarfile.TarError:  # empty, or torn inside its first header
        return 0, 0
    with tf:
        found = _whole_members(tf, path.stat().st_size, items)
        for i in range(0, len(found), CHUNK):
            images = _synthetic_images(cache_path, items[i:i + CHUNK])
            for k, m in enumerate(found[i:i + CHUNK], start=i):
                if not _matches(tf.extractfile(m).read(), items[k], images):
                    found = found[:k]
                    break
    if not found:
        return 0, 0
    last = found[-1]
    return len(found), last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _write_tar(cache_path: Path, out: Path, items: list[Item], workers: int, bar) -> Counter:
    path = out / TAR_NAME
    good, offset = _resume_tar(path, cache_path, items) if path.exists() else (0, 0)
    bar.update(good)
    mtime = int(cache_path.stat().st_mtime)
    rest = items[good:]
    chunks = [rest[i:i + CHUNK] for i in range(0, len(rest), CHUNK)]
    with open(path, "r+b" if path.exists() else "wb") as f:
        try:
            f.truncate(offset)
            f.seek(offset)
            # Not a `with`: closing writes the end-of-archive blocks, which only a finished tar gets.
            tf = tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
            for chunk, encoded in zip(chunks, _run(_encode_task, [(str(cache_path), c) for c in chunks], workers)):
                for it, data in zip(chunk, encoded):
                    _add(tf, _member(it, True), data, mtime)
                f.flush()  # a kill loses at most this chunk; the rerun cuts back to the last whole member
                bar.update(len(chunk))
            tf.close()  # the end-of-archive blocks, only once every member is in
        except OSError as e:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    return Counter(checked=good, written=len(rest))


# -- webdataset shards, each written whole ------------------------------------------------------------

def _shard_task(cache_path: str, path: str, items: list[Item], mtime: int) -> Counter:
    path, images = Path(path), _synthetic_images(cache_path, items)
    if path.exists():
        try:
            with tarfile.open(path, "r:") as tf:
                members = tf.getmembers()
                names = [m.name for m in members]
                want = [n for it in items for n in (_member(it, False), f"{it.key}.cls")]
                if names == want and all(
                        _matches(tf.extractfile(members[2 * k]).read(), it, images)
                        and tf.extractfile(members[2 * k + 1]).read() == str(it.label).encode()
                        for k, it in enumerate(items)):
                    return Counter(checked=len(items))
        except (tarfile.TarError, OSError):
            pass
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for it in items:
            _add(tf, _member(it, False), _encoded(it, images), mtime)
            _add(tf, f"{it.key}.cls", str(it.label).encode(), mtime)
    return Counter(written=len(items))


def shard_names(n_items: int, shard_size: int) -> list[str]:
    return [f"shard-{k:06d}.tar" for k in range(-(-n_items // shard_size))]


def _write_shards(cache_path: Path, out: Path, items: list[Item], workers: int, bar, shard_size: int) -> Counter:
    """``items`` (in their shuffled order) in shards of ``shard_size``, and timm's ``_info.json``."""
    names = shard_names(len(items), shard_size)
    shards = [items[k * shard_size:(k + 1) * shard_size] for k in range(len(names))]
    mtime = int(cache_path.stat().st_mtime)
    tasks = [(str(cache_path), str(out / n), s, mtime) for n, s in zip(names, shards)]
    done = Counter()
    for shard, result in zip(shards, _run(_shard_task, tasks, workers)):
        done.update(result)
        bar.update(len(shard))
    info = {"name": out.name, "splits": {"train": {"name": "train", "num_samples": len(items), "filenames": names,
                                                   "shard_lengths": [len(s) for s in shards]}}}
    write_text_atomic(out / INFO_NAME, json.dumps(info, indent=1))
    return done


# -- workers ----------------------------------------------------------------------------------------

def _quiet_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which cancels the rest


def _run(fn, tasks: list[tuple], workers: int):
    """``fn(*task)`` for each task, in order: here, or in ``workers`` spawned processes (spawn: a clean
    child, whatever threads this process has started). Leaving early cancels what has not started."""
    if workers <= 1 or len(tasks) < 2:
        for t in tasks:
            yield fn(*t)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ex = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet_worker)
    try:
        yield from ex.map(fn, *zip(*tasks))
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def default_workers(n_images: int) -> int:
    return min(os.cpu_count() or 1, 8) if n_images >= PARALLEL_MIN else 1


# -- the output folder, the record and the manifest ---------------------------------------------------

def _identity(cache: Path, syn: SyntheticCache, settings: ExportSettings) -> dict:
    """What a rerun must match to resume: the settings and which cache (its path, size and generator)."""
    s = asdict(settings)
    s["classes"] = list(settings.classes) if settings.classes else None
    s["real"] = str(Path(settings.real).resolve()) if settings.real and settings.real != "digits" else settings.real
    if settings.format != "webdataset":
        s.pop("shard_size"), s.pop("shuffle_seed")
    return s | {"cache": {"path": str(cache.resolve()), "bytes": cache.stat().st_size, "images": len(syn),
                          "weights_sha256": syn.attrs["generator"].get("weights_sha256")}}


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def prepare_output(out: Path, settings: dict, overwrite: bool, protect: list[Path]) -> bool:
    """Make ``out`` ready; returns whether this is a rerun of the same export (resume). A folder that is
    not empty is refused unless it holds this export or ``overwrite`` is set (then it is emptied)."""
    for p in protect:
        if _inside(p, out):
            raise ExportError(f"{out}: holds the input {p}; give another --out")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; give a new or empty folder as --out")
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(p for p in out.iterdir() if not p.name.startswith(".lock"))  # our own lock is there
    if not entries:
        return False
    if overwrite:
        for p in entries:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return False
    try:
        before = json.loads((out / "export.json").read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ExportError(f"{out}: not empty ({len(entries)} entries, such as {entries[0].name!r}); pass --overwrite "
                          "to replace its contents, or give a new or empty folder") from None
    if before != settings:
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        raise ExportError(f"{out}: holds an export with other settings ({', '.join(changed)}); pass --overwrite "
                          "to replace it, or give another folder")
    return True


def _provenance(syn: SyntheticCache) -> dict:
    attrs = dict(syn.attrs)
    if isinstance(attrs.get("filter"), str):
        attrs["filter"] = json.loads(attrs["filter"])
    return attrs


def _path_of(it: Item, fmt: str, shard_of: dict | None) -> str:
    if fmt == "folder":
        return f"{it.name}/{it.key}{it.ext}"
    if fmt == "tar":
        return f"{TAR_NAME}:{_member(it, True)}"
    return f"{shard_of[it.key]}:{_member(it, False)}"


def write_manifest(path: Path, items: list[Item], fmt: str, syn: SyntheticCache, shard_of: dict | None = None) -> None:
    """One row per image. ``filter_score`` is empty: the filter stores no per-image score. ``near_copy``
    is ``false`` for a filtered cache (the filter dropped every near-copy), empty for an unfiltered one."""
    gen, smp, seeds = syn.attrs["generator"], syn.attrs["sampler"], syn.seeds
    near = "false" if "filter" in syn.attrs else ""
    synthetic = [gen.get("weights_sha256", ""), smp.get("sampler", ""), smp.get("steps", ""), smp.get("guidance", "")]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        for it in items:
            head = [_path_of(it, fmt, shard_of), it.key, it.name, it.label, it.kind]
            if it.kind == "synthetic":
                w.writerow(head + [f"{syn.path}[{it.ref}]", *synthetic, int(seeds[it.ref]), "", near])
            else:
                w.writerow(head + [str(it.ref) if isinstance(it.ref, Path) else "", "", "", "", "", "", "", ""])


def export_cache(cache: str | os.PathLike, out: str | os.PathLike, settings: ExportSettings, *,
                 overwrite: bool = False, workers: int | None = None, command: str = "",
                 progress: bool = True) -> dict:
    """Write the images of ``cache`` (and ``settings.real``'s) to the folder ``out`` in
    ``settings.format``, with ``manifest.csv`` and ``export.json``; returns the export record.
    Resumes an interrupted export with the same settings. The caller holds ``out``'s lock."""
    from cbdm_aug.progress import counter

    cache, out = Path(cache), Path(out)
    with SyntheticCache(cache) as syn:
        classes, items = select(syn, settings)
        identity = _identity(cache, syn, settings)
        protect = [cache] + ([Path(settings.real)] if settings.real and Path(settings.real).exists() else [])
        resumed = prepare_output(out, identity, overwrite, protect)
        counts = {n: {"synthetic": 0, "real": 0} for n in classes}
        for it in items:
            counts[it.name][it.kind] += 1
        from cbdm_aug import __version__

        record = {"status": "running", "format": settings.format, "images": len(items), "classes": classes,
                  "counts": counts, "settings": identity, "command": command, "package_version": __version__,
                  "cache": str(cache), "cache_provenance": _provenance(syn)}
        write_text_atomic(out / "export.json", json.dumps(record, indent=1, default=str))
        workers = workers or default_workers(len(items))
        bar = counter(len(items), f"export {settings.format}", "img") if progress else _NoBar()
        try:
            done, shard_of = _write(cache, out, items, settings, workers, bar)
        finally:
            bar.close()
        write_manifest(out / "manifest.csv", items, settings.format, syn, shard_of)
    record.update(status="complete", resumed=resumed, done=dict(done))
    write_text_atomic(out / "export.json", json.dumps(record, indent=1, default=str))
    return record


def _write(cache: Path, out: Path, items: list[Item], settings: ExportSettings, workers: int, bar):
    """(how many images were checked, written, linked..., each image's shard for the webdataset)."""
    if settings.format == "folder":
        return _write_folder(cache, out, items, workers, bar), None
    if settings.format == "tar":
        return _write_tar(cache, out, items, workers, bar), None
    shuffled = [items[i] for i in np.random.default_rng(settings.shuffle_seed).permutation(len(items))]
    done = _write_shards(cache, out, shuffled, workers, bar, settings.shard_size)
    names = shard_names(len(items), settings.shard_size)
    return done, {it.key: names[k // settings.shard_size] for k, it in enumerate(shuffled)}


class _NoBar:
    def update(self, k: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
