"""How many synthetic images each class gets: the count policies of ``cbdm-aug generate``.

    fill     top every class up to the largest class's real count (the default; the union of
             real and synthetic data is balanced)
    fixed    the same number for every class
    target   the smallest union of real and synthetic data that follows a target distribution
             and keeps every real image: total T = max_c real_c / p_c, synthetic_c = ceil(T p_c) - real_c
    file     an explicit count per class, read from a JSON object or a two-column CSV
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

POLICIES = ("fill", "fixed", "target", "file")
# More than this many images of one class is a typo, not a plan (it would be >100 GB at 64x64).
MAX_PER_CLASS = 10_000_000


@dataclass(frozen=True)
class Plan:
    """Synthetic image counts per class, in class-index order. ``starts``: the index of each class's
    first image (its seed is ``image_seed(seed, c, start)``), so a plan can continue another one; None
    is 0 for every class."""

    policy: str
    class_names: tuple[str, ...]
    counts: tuple[int, ...]
    real_counts: tuple[int, ...] | None = None
    starts: tuple[int, ...] | None = None

    def __post_init__(self):
        if len(self.counts) != len(self.class_names):
            raise ValueError(f"{len(self.counts)} counts for {len(self.class_names)} classes")
        for name, n in zip(self.class_names, self.counts):
            _check_count(name, n)
        if self.starts is not None and (len(self.starts) != len(self.counts) or min(self.starts) < 0):
            raise ValueError(f"starts must be one index >= 0 per class, got {self.starts}")
        if self.total == 0:
            raise ValueError(f"the {self.policy!r} plan generates no images; choose another policy "
                             f"or larger counts")

    @property
    def total(self) -> int:
        return sum(self.counts)

    def to_dict(self) -> dict:
        real = dict(zip(self.class_names, self.real_counts)) if self.real_counts is not None else None
        starts = {"starts": dict(zip(self.class_names, self.starts))} if self.starts is not None else {}
        return {"policy": self.policy, "counts": dict(zip(self.class_names, self.counts)),
                "real_counts": real, "total": self.total} | starts

    def first(self, c: int) -> int:
        """The index of class ``c``'s first image."""
        return 0 if self.starts is None else self.starts[c]



def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n > MAX_PER_CLASS:
        raise ValueError(f"class {name!r}: synthetic count must be an integer in [0, {MAX_PER_CLASS}], "
                         f"got {n!r}")
    return n


def _as_count(name: str, value) -> int:
    """An int from JSON/CSV text; 12.0 is fine, 12.5 and 'abc' are not."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"class {name!r}: count {value!r} is not a number") from None
    if not f.is_integer():
        raise ValueError(f"class {name!r}: count {value!r} is not a whole number")
    return _check_count(name, int(f))


def read_class_values(path: str | os.PathLike, class_names) -> dict[str, float]:
    """``{class name: value}`` from a JSON object or a CSV of ``name,value`` rows (header optional).

    Every name must be a known class; classes the file leaves out are absent from the result.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{class name: value}}")
        items = list(data.items())
    else:
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if rows and len(rows[0]) == 2 and rows[0][0].strip() not in class_names:
            try:
                float(rows[0][1])
            except ValueError:
                rows = rows[1:]  # a header row such as "class,count"
        bad = [r for r in rows if len(r) != 2]
        if bad:
            raise ValueError(f"{path}: expected two columns (class,value) per row, got {bad[0]!r}")
        items = [(a.strip(), b.strip()) for a, b in rows]
    names = [k for k, _ in items]
    unknown = sorted(set(names) - set(class_names))
    if unknown:
        raise ValueError(f"{path}: unknown classes {unknown}; the generator's classes are {list(class_names)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: classes listed more than once: {dupes}")
    return dict(items)


def fill_plan(class_names, real_counts) -> Plan:
    """Every class up to the largest class's real count."""
    n_max = max(real_counts)
    return Plan("fill", tuple(class_names), tuple(n_max - int(c) for c in real_counts), tuple(real_counts))


def fixed_plan(class_names, per_class: int, real_counts=None) -> Plan:
    """``per_class`` images of every class."""
    _check_count("*", per_class)
    return Plan("fixed", tuple(class_names), (int(per_class),) * len(class_names),
                tuple(real_counts) if real_counts is not None else None)


def target_plan(class_names, real_counts, target) -> Plan:
    """Top up to target proportions ``target``: ``"uniform"``, a {class: weight} dict, or a JSON/CSV
    file of weights (normalised; classes left out get weight 0 and no synthetic images)."""
    if isinstance(target, str) and target == "uniform":
        weights = {n: 1.0 for n in class_names}
    elif isinstance(target, dict):
        weights = target
    else:
        weights = read_class_values(target, class_names)
    p = []
    for name in class_names:
        w = weights.get(name, 0.0)
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise ValueError(f"class {name!r}: target weight {w!r} is not a number") from None
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"class {name!r}: target weight must be finite and >= 0, got {w}")
        p.append(w)
    if sum(p) <= 0:
        raise ValueError("the target distribution has no positive weight")
    p = [w / sum(p) for w in p]
    total = max(r / q for r, q in zip(real_counts, p) if q > 0)
    # The 1e-9 slack keeps float error from adding an image where T p_c is an exact integer.
    counts = tuple(max(0, math.ceil(total * q - 1e-9) - int(r)) if q > 0 else 0
                   for r, q in zip(real_counts, p))
    return Plan("target", tuple(class_names), counts, tuple(real_counts))


def file_plan(class_names, path, real_counts=None) -> Plan:
    """Counts from a JSON/CSV file mapping class name -> count; classes left out get 0."""
    values = read_class_values(path, class_names)
    counts = tuple(_as_count(n, values[n]) if n in values else 0 for n in class_names)
    return Plan("file", tuple(class_names), counts, tuple(real_counts) if real_counts is not None else None)


def capped_plan(plan: Plan, caps) -> Plan:
    """``plan`` with class c's count lowered to ``caps[c]`` (``mixing.synthetic_cap``: what the arms can draw)."""
    return Plan(plan.policy, plan.class_names, tuple(min(n, int(m)) for n, m in zip(plan.counts, caps)),
                plan.real_counts, plan.starts)


def make_plan(policy: str, class_names, real_counts, *, per_class: int | None = None,
              target=None, counts_file=None) -> Plan:
    """The plan for ``policy`` (one of ``POLICIES``) with its one option."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
    needs = {"fixed": ("per_class", per_class), "target": ("target", target), "file": ("counts_file", counts_file)}
    if policy in needs and needs[policy][1] is None:
        raise ValueError(f"policy {policy!r} needs {needs[policy][0]}")
    given = [k for k, (name, v) in needs.items() if v is not None and k != policy]
    if given:
        raise ValueError(f"policy {policy!r} does not take {', '.join(needs[k][0] for k in given)}")
    real_counts = [int(c) for c in real_counts] if real_counts is not None else None
    if real_counts is None and policy in ("fill", "target"):
        raise ValueError(f"policy {policy!r} needs the real class counts, which the generator run lacks")
    if policy == "fill":
        return fill_plan(class_names, real_counts)
    if policy == "fixed":
        return fixed_plan(class_names, per_class, real_counts)
    if policy == "target":
        return target_plan(class_names, real_counts, target)
    return file_plan(class_names, counts_file, real_counts)
