"""Summaries over seeds (no plotting, no I/O).

Few-seed RL results are summarised the way Agarwal et al. (NeurIPS 2021, "Deep RL at the edge of
the statistical precipice") recommend: the interquartile mean (IQM: the mean of the middle 50 % of
runs) with a 95 % stratified percentile-bootstrap confidence interval. Stratified: each env's runs
are resampled on their own, so an aggregate over envs never trades one env's seeds for another's.
scipy does the trimming and the bootstrap; the Student-t interval stays for n ≥ 5 seeds, where it
means something.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000
T_MIN_SEEDS = 5  # fewer seeds: no Student-t interval is reported

# Each metric's range: intervals (and plotted bands) are clipped to it. None: unbounded that side.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "eval/success": (0.0, 1.0),
    "eval/time_at_goal_frac": (0.0, 1.0),
    "eval/time_at_goal": (0.0, None),
    "eval/final_distance": (0.0, None),
    "coverage/cells_visited_frac": (0.0, 1.0),
    "coverage/goal_spread": (0.0, None),
    "env_steps": (0.0, None),
    "wall_time_s": (0.0, None),
}


@dataclass(frozen=True)
class Interval:
    """An aggregate of ``n`` runs: its point estimate and 95 % interval (None below two runs)."""

    point: float
    low: float | None
    high: float | None
    n: int

    def text(self, digits: int) -> str:
        """``0.412 [0.310, 0.520]``; one run: its value; none: ``—``."""
        if not math.isfinite(self.point):
            return "—"
        fmt = (lambda v: f"{v:.{digits}f}") if digits else (lambda v: f"{v:,.0f}")
        if self.low is None or self.high is None:
            return fmt(self.point)
        return f"{fmt(self.point)} [{fmt(self.low)}, {fmt(self.high)}]"

    def errors(self) -> tuple[float, float]:
        """(below, above) the point: asymmetric error bars (0 without an interval)."""
        if self.low is None or self.high is None or not math.isfinite(self.point):
            return 0.0, 0.0
        return self.point - self.low, self.high - self.point


def finite(values: Sequence[float | None]) -> np.ndarray:
    """The finite values, as floats (missing and non-finite ones left out)."""
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], float)


def iqm(values: Sequence[float | None]) -> float:
    """Interquartile mean: 25 % trimmed from each end (scipy's ``trim_mean``); NaN when empty."""
    from scipy.stats import trim_mean

    v = finite(values)
    return float(trim_mean(v, 0.25)) if len(v) else float("nan")


def clip(value: float, metric: str | None) -> float:
    low, high = RANGES.get(metric or "", (None, None))
    if low is not None:
        value = max(low, value)
    return min(high, value) if high is not None else value


def iqm_interval(
    strata: Sequence[Sequence[float | None]], metric: str | None = None, seed: int = 0
) -> Interval:
    """IQM of every run of every stratum (env), with its 95 % stratified percentile-bootstrap interval
    (``scipy.stats.bootstrap``, each stratum resampled on its own), clipped to ``metric``'s range.

    A stratum with one run is held fixed (it has nothing to resample); below two runs in all, no interval.
    """
    from scipy.stats import bootstrap, trim_mean

    groups = [g for g in (finite(s) for s in strata) if len(g)]
    n = sum(len(g) for g in groups)
    if n == 0:
        return Interval(float("nan"), None, None, 0)
    point = clip(iqm(np.concatenate(groups)), metric)
    resampled = [g for g in groups if len(g) > 1]
    if n < 2 or not resampled:
        return Interval(point, None, None, n)
    fixed = np.concatenate([g for g in groups if len(g) == 1] or [np.zeros(0)])

    def statistic(*samples, axis=-1):
        shape = np.broadcast_shapes(*(s.shape[:-1] for s in samples))
        parts = [np.broadcast_to(s, (*shape, s.shape[-1])) for s in samples]
        parts.append(np.broadcast_to(fixed, (*shape, len(fixed))))
        return trim_mean(np.concatenate(parts, axis=-1), 0.25, axis=-1)

    ci = bootstrap(tuple(resampled), statistic, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                   method="percentile", vectorized=True, rng=np.random.default_rng(seed)).confidence_interval  # fmt: skip
    return Interval(point, clip(float(ci.low), metric), clip(float(ci.high), metric), n)


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the 95 % Student-t interval); no interval from one value."""
    v = finite(values)
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
