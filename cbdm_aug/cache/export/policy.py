"""What an export writes: its settings, and which images each class gets (``select``).

Per class: its real images first (spread evenly over the class when ``per_class`` caps it), then its
generated ones, bounded by the run's decisions (``cbdm_aug.mixing``): a class whose share is ``s``
gets at most ``floor(s * places)`` generated images, where its places are ``per_class`` with a cap,
and otherwise its real images plus the generated ones (so ``generated <= s / (1 - s) * real``). A
refused class (share 0) gets none. With ``per_class`` and real images, each generated image a
decision withholds is replaced by a repeat of one of the class's real images, as the plugin's
sampler fills its places; without real images to repeat, the class stays short.

The real floor. With ``per_class`` and real images, the export is one class-balanced epoch, so it keeps
the sampler's floor (``min_real_share`` f, ``cbdm_aug.mixing.MIN_REAL_SHARE`` by default, as the run's
"+ synthetic" arms trained): at least ``f * per_class`` of a class's places go to its real images (each
once, then repeats), and generated images take at most the rest. Without it a 3-image class exported at
``--per-class 300`` would be 99% generated where the arm that was measured saw at most half.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cbdm_aug.cache.reader import SyntheticCache
from cbdm_aug.errors import UserError
from cbdm_aug.mixing import MIN_REAL_SHARE

FORMATS = ("folder", "tar", "webdataset")
# Real files kept byte for byte, and their extension in the export (timm's wds reader keys on jpg, png, webp;
# its folder reader takes png, jpg, jpeg); real images in other formats are re-encoded as PNG.
KEPT_EXTENSIONS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}
NO_DECISIONS = "none"  # --decisions none: every generated image, whatever the run decided


class ExportError(UserError):
    """An export that cannot start: a bad option, class name or output folder."""


@dataclass(frozen=True)
class ExportSettings:
    """What an export writes. ``classes`` None means all; ``per_class`` caps each class (real images
    first, then generated ones) for a class-balanced set; ``shuffle_seed`` orders the webdataset samples
    (class-sorted shards would give a streaming trainer's shuffle buffer one class at a time).
    ``decisions``: None honours the decisions file beside the cache (``cbdm_aug.mixing.find_decisions``;
    none there, no bound), a path honours that file, ``"none"`` exports every generated image."""

    format: str = "folder"
    shard_size: int = 5000
    real: str | None = None
    classes: tuple[str, ...] | None = None
    per_class: int | None = None
    shuffle_seed: int = 0
    decisions: str | None = None
    min_real_share: float = MIN_REAL_SHARE  # with per_class and real images: the sampler's real floor (0: none)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.shard_size < 1:
            raise ExportError(f"--shard-size must be at least 1, got {self.shard_size}")
        if self.per_class is not None and self.per_class < 1:
            raise ExportError(f"--per-class must be at least 1, got {self.per_class}")
        if self.classes is not None and not self.classes:
            raise ExportError("--classes names no class; give a comma-separated list of class names")
        if not 0 <= self.min_real_share <= 1:
            raise ExportError(f"--min-real-share must be in [0, 1], got {self.min_real_share}")


class Item(NamedTuple):
    """One exported image. ``ref``: a cache index (synthetic), a file ``Path`` or a uint8 HWC array (real)."""

    key: str
    name: str   # class name
    label: int  # index among the exported classes
    kind: str   # "synthetic" or "real"
    ref: object
    ext: str    # ".png", or a kept real file's own extension
    repeat_of: str = ""  # a real repeat that fills a withheld generated place: the key it repeats


@dataclass(frozen=True)
class Honoured:
    """How the decisions (or the real floor) changed one class of the export: its share bound, the generated
    images it keeps and withholds, and the real repeats that fill withheld places (``short``: places left
    empty). ``floor``: the real floor when it, not a decision, set the bound."""

    share: float
    synthetic: int
    withheld: int
    repeated: int
    short: int
    floor: float | None = None

    def to_json(self) -> dict:
        return {"share": self.share, "synthetic": self.synthetic, "withheld": self.withheld,
                "repeated": self.repeated, "short": self.short, "floor": self.floor}

    @classmethod
    def from_json(cls, d: dict) -> Honoured:
        return cls(float(d["share"]), int(d["synthetic"]), int(d["withheld"]), int(d["repeated"]), int(d["short"]),
                   d.get("floor"))

    def line(self, name: str, per_class: int | None) -> str:
        """One line for the user: what the decision (or the real floor) did to class ``name``."""
        what = ("run refused generated images" if self.share <= 0 else
                f"real floor keeps {self.floor:.0%} of its places for its real images" if self.floor is not None else
                f"run bounds generated images to {self.share:.0%}")
        line = f"class {name}: the {what}; {self.synthetic} generated exported, {self.withheld} withheld"
        if self.repeated:
            line += f"; {self.repeated} repeats of its real images take their places"
        if self.short:
            line += f"; their {self.short} places stay empty under --per-class {per_class} (no real image to repeat)"
        return line


class Selection(NamedTuple):
    """The exported classes (the cache's order), the images, the decisions file honoured (None: none)
    with its shares, and what it changed per class."""

    classes: list[str]
    items: list[Item]
    decisions: Path | None
    shares: dict[str, float]
    honoured: dict[str, Honoured]


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


def _decisions(syn: SyntheticCache, settings: ExportSettings) -> tuple[Path | None, dict[str, float]]:
    """(the decisions file to honour or None, its per-class shares)."""
    from cbdm_aug.mixing import DecisionsError, find_decisions, read_shares

    if settings.decisions == NO_DECISIONS:
        return None, {}
    path = find_decisions(syn.path) if settings.decisions is None else Path(settings.decisions)
    if path is None:
        return None, {}
    if not path.is_file():
        raise ExportError(f"--decisions {path}: no such file; give a run's decisions.json or 'none'")
    try:
        shares = read_shares(path)
    except DecisionsError as e:
        raise ExportError(str(e)) from None
    unknown = [n for n in shares if n not in syn.class_names]
    if unknown:
        raise ExportError(f"decisions file {path} names classes the cache lacks ({', '.join(unknown[:5])}); it is "
                          "another run's: pass --decisions FILE for this cache's, or --decisions none")
    return path.resolve(), shares


def _real_count(syn: SyntheticCache, name: str) -> int | None:
    """The class's real image count the cache's plan recorded, if it did."""
    counts = (syn.attrs.get("plan") or {}).get("real_counts")
    return counts.get(name) if isinstance(counts, dict) else None


def _bound(share: float, places: int | None, real: int | None) -> int | None:
    """The most generated images a class with share bound ``share`` may get: of ``places`` places, or
    beside ``real`` real images; None where it cannot be told."""
    if share >= 1:
        return None
    if share <= 0:
        return 0
    if places is not None:
        return math.floor(share * places + 1e-9)
    return None if real is None else math.floor(share / (1 - share) * real + 1e-9)


def _evenly(n: int, k: int) -> np.ndarray:
    """``k`` of ``range(n)`` spread evenly (all of them when ``k >= n``)."""
    return np.arange(n) if k >= n else np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _class_items(syn: SyntheticCache, settings: ExportSettings, name: str, label: int, refs: list,
                 share: float | None, width: int) -> tuple[list[Item], Honoured | None]:
    """One class's images (real, generated, then real repeats for withheld places) and what its
    decision changed (None: no decision bound it)."""
    cap = settings.per_class
    chosen = _evenly(len(refs), cap if cap else len(refs))
    real = []
    for j in chosen:
        k, ref = refs[j]
        ext = KEPT_EXTENSIONS.get(ref.suffix.lower(), ".png") if isinstance(ref, Path) else ".png"
        real.append(Item(f"real-{k:0{width}d}", name, label, "real", ref, ext))
    index = np.flatnonzero(syn.labels == syn.class_names.index(name))
    if cap is not None:
        index = index[:max(0, cap - len(real))]
    floor = settings.min_real_share if cap is not None and real else 0.0
    limit = None if share is None and not floor else min(1.0 if share is None else share, 1 - floor)
    bound = None if limit is None else _bound(limit, cap, len(real) if settings.real else _real_count(syn, name))
    if share is not None and share < 1 and bound is None:
        raise ExportError(f"class {name!r}: the decisions bound its generated share to {share:g}, and neither "
                          "--real nor the cache tells its real count; pass --real DATA, or --decisions none")
    kept = index if bound is None else index[:bound]
    items = real + [Item(f"syn-{i:0{width}d}", name, label, "synthetic", int(i), ".png") for i in kept]
    withheld = len(index) - len(kept)
    if limit is None or (limit > 0 and not withheld):
        return items, None
    repeats = withheld if cap is not None and real else 0
    for r in range(repeats):  # cycle through the class's real images, as the sampler's repeats do
        it = real[r % len(real)]
        items.append(it._replace(key=f"{it.key}-r{r // len(real) + 1}", repeat_of=it.key))
    short = withheld - repeats if cap is not None else 0
    by_floor = share is None or share > limit
    return items, Honoured(limit, len(kept), withheld, repeats, short, floor if by_floor else None)


def select(syn: SyntheticCache, settings: ExportSettings) -> Selection:
    """The exported classes and images: per class, its real images then its generated ones, up to
    ``per_class`` in all, as the decisions allow (see the module docstring)."""
    classes = _pick_classes(syn.class_names, settings.classes)
    _check_names(classes)
    real = _open_real(settings.real, syn.class_names, classes) if settings.real else {}
    path, shares = _decisions(syn, settings)
    width = max(6, len(str(len(syn) - 1)))
    items, honoured = [], {}
    for label, name in enumerate(classes):
        got, h = _class_items(syn, settings, name, label, real.get(name, []), shares.get(name), width)
        items += got
        if h is not None:
            honoured[name] = h
    return Selection(classes, items, path, shares, honoured)
