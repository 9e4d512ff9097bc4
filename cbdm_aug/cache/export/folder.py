"""The ``folder`` format: ``DIR/<class>/<id>.png``, read by torchvision's ``ImageFolder`` and timm's folder
reader (``timm/data/readers/reader_image_folder.py``).

A real image file is hard-linked where it can be (no copy, no space) and copied otherwise. Images are
written in place, not through ``atomic_path``: that scans the folder for stale temporaries on every
call, which is quadratic over a 100k-image class folder; a file torn by a kill fails the rerun's pixel
check and is written again.
"""
from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

from cbdm_aug.cache.export.images import chunks, encoded, is_kept_file, matches, run_tasks, synthetic_images
from cbdm_aug.cache.export.policy import Item


def member(it: Item) -> str:
    """The image's path inside ``DIR``."""
    return f"{it.name}/{it.key}{it.ext}"


def _put_file(path: Path, it: Item, images: dict, link: bool) -> str:
    """Write one image of the folder; returns how: linked, copied or written."""
    path.unlink(missing_ok=True)
    if link and is_kept_file(it):
        try:
            os.link(it.ref, path)
            return "linked"
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES):
                raise
    try:
        with open(path, "wb") as f:
            f.write(encoded(it, images))
    except OSError as e:
        path.unlink(missing_ok=True)  # never a torn image left under its final name
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    return "copied" if is_kept_file(it) else "written"


def _folder_task(cache_path: str, root: str, items: list[Item], link: bool) -> Counter:
    images, done = synthetic_images(cache_path, items), Counter()
    for it in items:
        path = Path(root) / member(it)
        if path.exists():
            if matches(path.read_bytes(), it, images):
                done["checked"] += 1
                continue
            done["rewritten"] += 1
        done[_put_file(path, it, images, link)] += 1
    return done


def write_folder(cache_path: Path, out: Path, items: list[Item], workers: int, bar, link: bool = True) -> Counter:
    """Every item under ``out/<class>/``, checking what a previous run left; returns how many were
    checked, written, linked, copied or rewritten."""
    for name in dict.fromkeys(it.name for it in items):
        (out / name).mkdir(exist_ok=True)
    done = Counter()
    parts = chunks(items)
    for chunk, result in zip(parts, run_tasks(_folder_task, [(str(cache_path), str(out), c, link) for c in parts],
                                              workers)):
        done.update(result)
        bar.update(len(chunk))
    return done
