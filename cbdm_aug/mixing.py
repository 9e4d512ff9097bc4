"""How real and generated images are mixed, and what a run's per-class decisions allow, in a module
without torch: the run settings (read by the CLI's ``--help``), the plugin's sampler, ``export`` and
other trainers share it.

``MIN_REAL_SHARE``: at least this share of a class's places in an epoch go to its real images (each
once, then repeats); generated images fill at most the rest. The evidence is in docs/decisions.md.

The decisions file. ``cbdm-aug run`` writes ``decisions.json`` beside the cache its "+ synthetic"
arms read (``OUT/cache/decisions.json`` beside ``OUT/cache/filtered.h5``): per class, the bound on
the share of its places that generated images may take (0: the class gets none). Whatever reads that
cache (the dataset wrapper, the sampler, ``export``) finds the file beside it and honours it unless
told otherwise. Two layouts are read:

- ``{"format": "cbdm-aug decisions", "version": 2, "classes": {name: {"share": s, ...}, ...}}``
  (each class's record may hold more: the evidence behind the decision);
- ``{name: share, ...}`` (run folders made before the layout above).
"""
from __future__ import annotations

import json
from pathlib import Path

MIN_REAL_SHARE = 0.5

DECISIONS_FILE = "decisions.json"
DECISIONS_FORMAT = "cbdm-aug decisions"


class DecisionsError(ValueError):
    """A decisions file that cannot be read."""


def find_decisions(cache: str | Path) -> Path | None:
    """The decisions file beside a cache file (``decisions.json`` in the same folder), or None."""
    p = Path(cache).parent / DECISIONS_FILE
    return p if p.is_file() else None


def read_shares(path: str | Path) -> dict[str, float]:
    """``{class name: bound on its synthetic share in [0, 1]}`` from a decisions file (either layout
    above). Raises ``DecisionsError`` naming the file for anything else."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DecisionsError(f"decisions file {path}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict):
        raise DecisionsError(f"decisions file {path}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") == DECISIONS_FORMAT:
        classes = doc.get("classes")
        if not isinstance(classes, dict):
            raise DecisionsError(f"decisions file {path}: 'classes' must map class names to records")
        raw = {k: (v.get("share") if isinstance(v, dict) else None) for k, v in classes.items()}
    else:
        raw = doc
    shares = {}
    for name, share in raw.items():
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise DecisionsError(f"decisions file {path}: class {name!r} has share {share!r}; expected a number "
                                 "in [0, 1]")
        shares[str(name)] = float(share)
    return shares


def refused(shares: dict[str, float]) -> list[str]:
    """The classes a decisions file gives no generated image (share 0), in file order."""
    return [n for n, s in shares.items() if s <= 0]
