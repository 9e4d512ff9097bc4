"""The ``tar`` format: one ``DIR/images.tar`` with members ``<class>/<id>.png``, read by timm's tar reader
(``timm/data/readers/reader_image_tar.py``).

The one tar is appended in place, chunk by chunk; a rerun cuts it back to its last whole, correct
member and appends the rest. The end-of-archive blocks are written only once every member is in.
"""
from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

from cbdm_aug.cache.export.images import CHUNK, chunks, encoded, matches, run_tasks, synthetic_images
from cbdm_aug.cache.export.policy import Item

TAR_NAME = "images.tar"


def member(it: Item) -> str:
    """The image's member name in the tar."""
    return f"{it.name}/{it.key}{it.ext}"


def add(tf: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    """One member ``name`` holding ``data`` (the webdataset shards write theirs the same way)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tf.addfile(info, io.BytesIO(data))


def _encode_task(cache_path: str, items: list[Item]) -> list[bytes]:
    images = synthetic_images(cache_path, items)
    return [encoded(it, images) for it in items]


def _whole_members(tf: tarfile.TarFile, size: int, items: list[Item]) -> list[tarfile.TarInfo]:
    """The tar's first members while they are whole and named as ``items`` are, in order."""
    found = []
    while len(found) < len(items):
        try:
            m = tf.next()
        except tarfile.TarError:  # a torn header
            break
        if m is None or m.name != member(items[len(found)]) or m.offset_data + m.size > size:
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
            images = synthetic_images(cache_path, items[i:i + CHUNK])
            for k, m in enumerate(found[i:i + CHUNK], start=i):
                if not matches(tf.extractfile(m).read(), items[k], images):
                    found = found[:k]
                    break
    if not found:
        return 0, 0
    last = found[-1]
    return len(found), last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def write_tar(cache_path: Path, out: Path, items: list[Item], workers: int, bar) -> Counter:
    """Every item into ``out/images.tar``, after the whole correct members a previous run left."""
    path = out / TAR_NAME
    good, offset = _resume_tar(path, cache_path, items) if path.exists() else (0, 0)
    bar.update(good)
    mtime = int(cache_path.stat().st_mtime)
    rest = items[good:]
    parts = chunks(rest)
    with open(path, "r+b" if path.exists() else "wb") as f:
        try:
            f.truncate(offset)
            f.seek(offset)
            # Not a `with`: closing writes the end-of-archive blocks, which only a finished tar gets.
            tf = tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
            for chunk, data in zip(parts, run_tasks(_encode_task, [(str(cache_path), c) for c in parts], workers)):
                for it, d in zip(chunk, data):
                    add(tf, member(it), d, mtime)
                f.flush()  # a kill loses at most this chunk; the rerun cuts back to the last whole member
                bar.update(len(chunk))
            tf.close()  # the end-of-archive blocks, only once every member is in
        except OSError as e:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    return Counter(checked=good, written=len(rest))
