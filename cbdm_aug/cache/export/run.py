"""``export_cache``: the output folder, the record and the manifest around one format's writer.

Resumable. ``export.json`` is written first with ``"status": "running"`` and says ``"complete"`` only
at the end; a rerun with the same settings checks what is there against the cache, pixel by pixel,
and writes the rest. The JSON and CSV files are written whole (``atomic.py``).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from cbdm_aug.atomic import write_text_atomic
from cbdm_aug.cache.export import folder, tar, webdataset
from cbdm_aug.cache.export.images import default_workers
from cbdm_aug.cache.export.manifest import write_manifest
from cbdm_aug.cache.export.policy import ExportError, ExportSettings, Item, Selection, select
from cbdm_aug.cache.reader import SyntheticCache


def _identity(cache: Path, syn: SyntheticCache, settings: ExportSettings, chosen: Selection) -> dict:
    """What a rerun must match to resume: the settings, which cache (its path, size and generator) and
    the decisions honoured (their file and shares)."""
    s = asdict(settings)
    s["classes"] = list(settings.classes) if settings.classes else None
    s["real"] = str(Path(settings.real).resolve()) if settings.real and settings.real != "digits" else settings.real
    s["decisions"] = {"file": str(chosen.decisions) if chosen.decisions else None, "shares": chosen.shares}
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


def _record(cache: Path, syn: SyntheticCache, settings: ExportSettings, chosen: Selection, identity: dict,
            command: str) -> dict:
    """``export.json`` as it starts: ``"status": "running"``, the counts, the decisions and provenance."""
    from cbdm_aug import __version__

    counts = {n: {"synthetic": 0, "real": 0} for n in chosen.classes}
    for it in chosen.items:
        counts[it.name][it.kind] += 1
    decisions = {"file": str(chosen.decisions) if chosen.decisions else None,
                 "classes": {n: h.to_json() for n, h in chosen.honoured.items()}}
    return {"status": "running", "format": settings.format, "images": len(chosen.items), "classes": chosen.classes,
            "counts": counts, "decisions": decisions, "settings": identity, "command": command,
            "package_version": __version__, "cache": str(cache), "cache_provenance": _provenance(syn)}


def export_cache(cache: str | os.PathLike, out: str | os.PathLike, settings: ExportSettings, *,
                 overwrite: bool = False, workers: int | None = None, command: str = "",
                 progress: bool = True) -> dict:
    """Write the images of ``cache`` (and ``settings.real``'s) to the folder ``out`` in
    ``settings.format``, with ``manifest.csv`` and ``export.json``; returns the export record.
    Honours the run's decisions (``settings.decisions``; ``record["decisions"]`` says what they changed).
    Resumes an interrupted export with the same settings. The caller holds ``out``'s lock."""
    from cbdm_aug.progress import counter

    cache, out = Path(cache), Path(out)
    with SyntheticCache(cache) as syn:
        chosen = select(syn, settings)
        identity = _identity(cache, syn, settings, chosen)
        protect = [cache] + ([Path(settings.real)] if settings.real and Path(settings.real).exists() else [])
        resumed = prepare_output(out, identity, overwrite, protect)
        record = _record(cache, syn, settings, chosen, identity, command)
        write_text_atomic(out / "export.json", json.dumps(record, indent=1, default=str))
        workers = workers or default_workers(len(chosen.items))
        bar = counter(len(chosen.items), f"export {settings.format}", "img") if progress else _NoBar()
        try:
            done, shard_of = _write(cache, out, chosen.items, settings, workers, bar)
        finally:
            bar.close()
        write_manifest(out / "manifest.csv", chosen.items, settings.format, syn, shard_of)
    record.update(status="complete", resumed=resumed, done=dict(done))
    write_text_atomic(out / "export.json", json.dumps(record, indent=1, default=str))
    return record


def _write(cache: Path, out: Path, items: list[Item], settings: ExportSettings, workers: int, bar):
    """(how many images were checked, written, linked..., each image's shard for the webdataset)."""
    if settings.format == "folder":
        return folder.write_folder(cache, out, items, workers, bar), None
    if settings.format == "tar":
        return tar.write_tar(cache, out, items, workers, bar), None
    order = webdataset.shuffled(items, settings.shuffle_seed)
    done = webdataset.write_shards(cache, out, order, workers, bar, settings.shard_size)
    names = webdataset.shard_names(len(items), settings.shard_size)
    return done, {it.key: names[k // settings.shard_size] for k, it in enumerate(order)}


class _NoBar:
    def update(self, k: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
