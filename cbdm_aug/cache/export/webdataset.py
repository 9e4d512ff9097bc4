"""The ``webdataset`` format: ``DIR/shard-000000.tar``, ... of at most ``shard_size`` samples (``<id>.png``
and ``<id>.cls``, the class index) and ``DIR/_info.json``, read by the webdataset package and timm's
``wds/`` reader (``timm/data/readers/reader_wds.py``).

Samples are shuffled across shards with a fixed seed (class-sorted shards would fill a streaming
trainer's shuffle buffer with one class at a time). Each shard is written whole (``atomic.py``); a
rerun keeps every shard that holds exactly its samples and writes the others again.
"""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np

from cbdm_aug.atomic import atomic_path, write_text_atomic
from cbdm_aug.cache.export.images import encoded, matches, run_tasks, synthetic_images
from cbdm_aug.cache.export.policy import Item
from cbdm_aug.cache.export.tar import add

INFO_NAME = "_info.json"  # where timm's wds reader looks for the split's shards and sample count


def member(it: Item) -> str:
    """The image's member name in its shard (its ``__key__`` plus the extension)."""
    return f"{it.key}{it.ext}"


def shard_names(n_items: int, shard_size: int) -> list[str]:
    return [f"shard-{k:06d}.tar" for k in range(-(-n_items // shard_size))]


def shuffled(items: list[Item], seed: int) -> list[Item]:
    """The order the samples go into the shards."""
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))]


def _shard_is_whole(path: Path, items: list[Item], images: dict) -> bool:
    try:
        with tarfile.open(path, "r:") as tf:
            members = tf.getmembers()
            want = [n for it in items for n in (member(it), f"{it.key}.cls")]
            return [m.name for m in members] == want and all(
                matches(tf.extractfile(members[2 * k]).read(), it, images)
                and tf.extractfile(members[2 * k + 1]).read() == str(it.label).encode()
                for k, it in enumerate(items))
    except (tarfile.TarError, OSError):
        return False


def _shard_task(cache_path: str, path: str, items: list[Item], mtime: int) -> Counter:
    path, images = Path(path), synthetic_images(cache_path, items)
    if path.exists() and _shard_is_whole(path, items, images):
        return Counter(checked=len(items))
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for it in items:
            add(tf, member(it), encoded(it, images), mtime)
            add(tf, f"{it.key}.cls", str(it.label).encode(), mtime)
    return Counter(written=len(items))


def write_shards(cache_path: Path, out: Path, items: list[Item], workers: int, bar, shard_size: int) -> Counter:
    """``items`` (in their shuffled order) in shards of ``shard_size``, and timm's ``_info.json``."""
    names = shard_names(len(items), shard_size)
    shards = [items[k * shard_size:(k + 1) * shard_size] for k in range(len(names))]
    mtime = int(cache_path.stat().st_mtime)
    tasks = [(str(cache_path), str(out / n), s, mtime) for n, s in zip(names, shards)]
    done = Counter()
    for shard, result in zip(shards, run_tasks(_shard_task, tasks, workers)):
        done.update(result)
        bar.update(len(shard))
    info = {"name": out.name, "splits": {"train": {"name": "train", "num_samples": len(items), "filenames": names,
                                                   "shard_lengths": [len(s) for s in shards]}}}
    write_text_atomic(out / INFO_NAME, json.dumps(info, indent=1))
    return done
