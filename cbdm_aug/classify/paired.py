"""Paired differences over seeds with Student-t intervals: the statistic of ``cbdm-aug run`` and
``benchmarks/tail_gain.py``. Two arms trained with the same seed share the initialisation and the
real-image draws, so the per-seed difference cancels most of the seed-to-seed spread."""
from __future__ import annotations

import math

import numpy as np


def t975(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def paired(a, b) -> dict:
    """Mean of ``a - b`` over paired seeds with its 95% t-interval, in the units of ``a`` and ``b``:
    ``mean``, ``lo``, ``hi``, ``n`` and ``per_seed``. One seed gives a NaN interval."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"paired: expected two equal-length lists of per-seed values, got shapes "
                         f"{np.shape(a)} and {np.shape(b)}")
    n = len(d)
    half = t975(n - 1) * d.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": float(d.mean()), "lo": float(d.mean() - half), "hi": float(d.mean() + half), "n": n,
            "per_seed": d.tolist()}


def excludes_zero(stat: dict) -> bool:
    """Whether the interval lies wholly above or wholly below 0 (False for a NaN interval)."""
    return bool(stat["lo"] > 0 or stat["hi"] < 0)


def interval(stat: dict, digits: int = 1) -> str:
    """``+4.1 [+1.2, +7.0]``; with one seed, ``+4.1, n/a (1 seed)``: there is no interval."""
    f = f"{{:+.{digits}f}}"
    if not (math.isfinite(stat["lo"]) and math.isfinite(stat["hi"])):
        return f"{f.format(stat['mean'])}, n/a ({stat.get('n', 1)} seed{'s' * (stat.get('n', 1) != 1)})"
    return f"{f.format(stat['mean'])} [{f.format(stat['lo'])}, {f.format(stat['hi'])}]"
