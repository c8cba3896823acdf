"""Summaries over seeds: Student-t intervals and grouping of result rows (no plotting, no I/O)."""

from __future__ import annotations

import math


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the 95 % Student-t interval); no interval from one value."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), None
    if len(v) == 1:
        return float(v[0]), None
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()), half


def sort_key(key: tuple) -> tuple:
    """Numbers numerically (4 before 32), then strings."""
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in key)


def group(results: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in results:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out
