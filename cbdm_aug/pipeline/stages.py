"""Resumable stages of a run folder: each stage records the settings that made its outputs.

``OUT/stages/<name>.json`` holds ``{"status": "running"|"done", "settings", "result", "seconds"}``,
written whole and renamed. A stage whose record is done with the same settings is reused. One that
was interrupted with the same settings resumes (its own outputs know how far they got: generator
checkpoints, a partial cache, finished classifier seeds). One with other settings is cleaned and
run again, and so is every stage after it: a stage's settings include the digests of the stages it
reads (``digest``), so a rerun upstream changes them.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from cbdm_aug.atomic import write_text_atomic
from cbdm_aug.dicts import dict_changes
from cbdm_aug.errors import UserError, stage_errors
from cbdm_aug.resources import peak_rss


def write_json_atomic(path: Path, obj) -> None:
    """``path`` holds either the old content or ``obj``, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=1, default=str))


def _plain(obj):
    return json.loads(json.dumps(obj, default=str))


def _diff(old: dict, new: dict) -> list[str]:
    """What changed between two stage settings, one phrase each; an ``after:`` key is a stage read."""
    changes = [f"stage {key[0][6:]!r} changed" if key[0].startswith("after:") else f"{'.'.join(key)}: {a!r} -> {b!r}"
               for key, a, b in dict_changes(old, new)]
    # a key that is None on one side and absent on the other reads as no change: say what it was
    return changes or ["a setting this version records was added or dropped (its value unset)"]


class RunError(UserError):
    """Bad input to ``cbdm-aug run``."""


class Stages:
    """The stage records of one run folder; ``echo`` gets one line per stage."""

    def __init__(self, out: Path, echo=print):
        self.dir, self.echo = Path(out) / "stages", echo
        self.records: dict[str, dict] = {}
        self.reused: set[str] = set()  # the stages this call reused as they were

    def _read(self, name: str) -> dict | None:
        try:
            return json.loads((self.dir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def digest(self, name: str) -> str:
        """A short hash of a finished stage's settings and result, for the settings of the stages after it."""
        rec = self.records[name]
        return hashlib.sha256(json.dumps([rec["settings"], rec["result"]], sort_keys=True).encode()).hexdigest()[:16]

    def run(self, name: str, title: str, settings: dict, make, clean=None, after=(), writes: Path | None = None) -> dict:
        """Reuse, resume or (re)run stage ``name``; returns its result (a JSON-ready dict).

        ``make()`` does the work and returns the result; it must resume its own partial outputs.
        ``clean()`` removes the outputs made with other settings. ``after`` names the stages read,
        ``writes`` the folder of the outputs (named when a full disk stops the stage).
        """
        settings = _plain({**settings, **{f"after:{a}": self.digest(a) for a in after}})
        rec = self._read(name)
        if rec and rec.get("status") == "done" and rec.get("settings") == settings:
            self.records[name] = rec
            self.reused.add(name)
            self.echo(f"[{name}] reused: {title} (made in {rec.get('seconds', 0):.0f} s)")
            return rec["result"]
        if rec and rec.get("settings") != settings:
            self.echo(f"[{name}] rerun: {title}, because " + "; ".join(_diff(rec.get("settings") or {}, settings)))
            if clean is not None:
                clean()
        elif rec:
            self.echo(f"[{name}] resuming: {title} (it was interrupted)")
        else:
            self.echo(f"[{name}] {title}")
        path = self.dir / f"{name}.json"
        with stage_errors(name, writes):
            write_json_atomic(path, {"status": "running", "settings": settings, "started": time.time()})
            t0, peak = time.time(), peak_rss()
            result = _plain(make())
            rec = {"status": "done", "settings": settings, "result": result, "seconds": round(time.time() - t0, 3),
                   "peak_rss_mb": peak(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
            write_json_atomic(path, rec)
        self.records[name] = rec
        return result
