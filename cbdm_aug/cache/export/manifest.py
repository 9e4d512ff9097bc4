"""``DIR/manifest.csv``: one row per exported image, which are generated and each one's provenance."""
from __future__ import annotations

import csv
from pathlib import Path

from cbdm_aug.atomic import atomic_path
from cbdm_aug.cache.export import folder, tar, webdataset
from cbdm_aug.cache.export.policy import Item
from cbdm_aug.cache.reader import SyntheticCache

MANIFEST_COLUMNS = ("path", "key", "class", "label", "kind", "source", "generator_sha256", "sampler", "steps",
                    "guidance", "seed", "filter_score", "near_copy", "repeat_of")


def _path_of(it: Item, fmt: str, shard_of: dict | None) -> str:
    if fmt == "folder":
        return folder.member(it)
    if fmt == "tar":
        return f"{tar.TAR_NAME}:{tar.member(it)}"
    return f"{shard_of[it.key]}:{webdataset.member(it)}"


def write_manifest(path: Path, items: list[Item], fmt: str, syn: SyntheticCache, shard_of: dict | None = None) -> None:
    """One row per image. ``filter_score`` is empty: the filter stores no per-image score. ``near_copy``
    is ``false`` for a filtered cache (the filter dropped every near-copy), empty for an unfiltered one.
    ``repeat_of``: for a real repeat that fills a place the run's decisions withheld, the key it repeats."""
    gen, smp, seeds = syn.attrs["generator"], syn.attrs["sampler"], syn.seeds
    near = "false" if "filter" in syn.attrs else ""
    synthetic = [gen.get("weights_sha256", ""), smp.get("sampler", ""), smp.get("steps", ""), smp.get("guidance", "")]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        for it in items:
            head = [_path_of(it, fmt, shard_of), it.key, it.name, it.label, it.kind]
            if it.kind == "synthetic":
                w.writerow(head + [f"{syn.path}[{it.ref}]", *synthetic, int(seeds[it.ref]), "", near, ""])
            else:
                source = str(it.ref) if isinstance(it.ref, Path) else ""
                w.writerow(head + [source, "", "", "", "", "", "", "", it.repeat_of])
