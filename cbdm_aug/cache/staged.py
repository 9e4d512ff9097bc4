"""Generate a cache in two steps: a first batch of every class, then the rest of only the classes the
caller keeps going (``cbdm-aug run`` stops a class none of whose first images pass its filter).

The result is one class-major cache. Image k of class c has seed ``image_seed(seed, c, k)`` whichever
step made it, so a class that went on holds exactly the images a one-step ``generate_cache`` would
have made, and a stopped class holds its first batch.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cbdm_aug.atomic import atomic_path
from cbdm_aug.cache.plan import Plan

log = logging.getLogger(__name__)


def first_sizes(counts, at_least: int, share: float = 0.0) -> tuple[int, ...]:
    """Each class's first batch: ``max(at_least, ceil(share * n))`` of its ``n`` planned images, all of a smaller
    class. With ``share`` s, a class whose images pass at rate r is stopped by chance with probability
    (1 - r)^(s n), about exp(-(r n) s): at most 5% where the rest would keep r n >= 3 / s images, and the first batch
    of a stopped class costs at most a share s of its plan (``cbdm-aug run``: docs/decisions.md)."""
    return tuple(min(int(n), max(int(at_least), math.ceil(share * n - 1e-9))) for n in counts)


def first_plan(plan: Plan, per_class) -> Plan:
    """The first ``per_class`` images of each class of ``plan`` (an int, or one count a class; all of a smaller
    class)."""
    sizes = [per_class] * len(plan.counts) if isinstance(per_class, int) else list(per_class)
    return Plan(plan.policy, plan.class_names, tuple(min(n, k) for n, k in zip(plan.counts, sizes)), plan.real_counts)


def rest_plan(plan: Plan, first: Plan, going: set[str]) -> Plan | None:
    """The images of ``plan`` after ``first``, for the classes in ``going`` (None if there are none)."""
    counts = tuple(n - f if name in going else 0 for name, n, f in zip(plan.class_names, plan.counts, first.counts))
    if not sum(counts):
        return None
    return Plan(plan.policy, plan.class_names, counts, plan.real_counts, starts=first.counts)


def generate_staged(generator, out: str | Path, plan: Plan, settings, per_class,
                    keep_going: Callable[[Path], set[str]], **kwargs) -> tuple[Path, Plan]:
    """Sample ``first_plan(plan, per_class)`` (an int, or one count a class) into ``OUT.first.h5``, ask ``keep_going(that path)`` which
    classes go on, sample the rest of those into ``OUT.rest.h5`` and join both into ``out`` (then the
    two parts go). Returns (``out``, the plan of what it holds). Each step resumes (``generate_cache``),
    and a complete ``out`` is returned as it is; ``kwargs`` go to ``generate_cache``."""
    from cbdm_aug.cache.generate import generate_cache

    out = Path(out)
    if _complete(out):  # joined by an earlier call
        from cbdm_aug.cache.reader import read_header

        counts = read_header(out)["plan"]["counts"]
        return out, Plan(plan.policy, plan.class_names, tuple(counts[n] for n in plan.class_names), plan.real_counts)
    first = first_plan(plan, per_class)
    first_path, rest_path = out.with_suffix(".first.h5"), out.with_suffix(".rest.h5")
    if not _complete(first_path):
        generate_cache(generator, first_path, first, settings, **kwargs)
    going = keep_going(first_path)
    rest = rest_plan(plan, first, going)
    if rest is not None and not _complete(rest_path):
        generate_cache(generator, rest_path, rest, settings, **kwargs)
    more = rest.counts if rest is not None else (0,) * len(first.counts)
    made = Plan(plan.policy, plan.class_names, tuple(f + r for f, r in zip(first.counts, more)), plan.real_counts)
    join(first_path, rest_path if rest is not None else None, out, made, kwargs.get("command", ""))
    first_path.unlink()
    rest_path.unlink(missing_ok=True)
    return out, made


def _complete(path: Path) -> bool:
    from cbdm_aug.cache.reader import read_header

    return path.is_file() and bool(read_header(path, require_complete=False)["complete"])


def join(first: Path, rest: Path | None, out: Path, plan: Plan, command: str = "", batch_size: int = 512) -> None:
    """One class-major cache at ``out``: each class's images of ``first``, then its images of ``rest``."""
    n = 1 if rest is None else 2
    _join([first] + ([rest] if rest is not None else []), lambda c: range(n), out, plan.to_dict(), command,
          batch_size)


def replace_classes(base: Path, other: Path | None, classes: set[int], out: Path, command: str = "",
                    batch_size: int = 512) -> None:
    """One class-major cache at ``out``: the images of ``classes`` from ``other`` (none where it has none, or is
    None), every other class's from ``base`` (``cbdm-aug run``'s evidence: a fold's own proxy's images from the unseen
    generator)."""
    from cbdm_aug.cache.reader import SyntheticCache

    paths = [base] + ([other] if other is not None else [])
    counts = []
    for path in paths:
        with SyntheticCache(path) as c:
            counts.append(np.bincount(c.labels, minlength=len(c.class_names)))
            if path == base:
                plan, names = dict(c.attrs["plan"]), list(c.class_names)
    kept = [0 if c in classes and other is None else int(counts[c in classes][c]) for c in range(len(names))]
    plan.update(counts=dict(zip(names, kept)), total=sum(kept))  # a plan dict, as the filter writes: it may be empty
    _join(paths, lambda c: ([1] if other is not None else []) if c in classes else [0], out, plan, command,
          batch_size)


def _join(paths: list[Path], use: Callable[[int], object], out: Path, plan: dict, command: str,
          batch_size: int) -> None:
    """One class-major cache at ``out``: for each class c, its images of ``paths[i]`` for i in ``use(c)``, in turn."""
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.cache.writer import CacheWriter, create_cache

    parts = [SyntheticCache(p) for p in paths]
    try:
        a, C = parts[0], len(parts[0].class_names)
        bounds = [np.searchsorted(p.labels, np.arange(C + 1)) for p in parts]  # class-major files
        order = [(c, i) for c in range(C) for i in use(c)]
        labels = np.concatenate([parts[0].labels[:0]] + [parts[i].labels[bounds[i][c]:bounds[i][c + 1]] for c, i in order])
        seeds = np.concatenate([parts[0].seeds[:0]] + [parts[i].seeds[bounds[i][c]:bounds[i][c + 1]] for c, i in order])
        with atomic_path(out) as tmp:
            create_cache(tmp, labels=labels, seeds=seeds, image_shape=a.image_shape, class_names=list(a.class_names),
                         generator=a.attrs["generator"], sampler=a.attrs["sampler"], plan=plan,
                         shard=None, command=command)
            with CacheWriter(tmp) as w:
                for c, i in order:
                    b = bounds[i]
                    for k in range(b[c], b[c + 1], batch_size):
                        w.write(parts[i].batch(slice(k, min(k + batch_size, b[c + 1]))))
                w.finish()
    finally:
        for p in parts:
            p.close()
