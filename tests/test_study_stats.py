"""Study statistics on known numbers: the IQM and its stratified bootstrap interval against values
computed by hand and against the exact bootstrap distribution (every resample enumerated), the
Student-t interval (kept for n ≥ 5) against scipy and a t-table, and the report's table against them.

The study tests run one seed per cell, where the report prints no interval, so the intervals are
checked here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from deepcrl.rundir.stats import iqm, iqm_interval, t_interval

SAMPLES = [
    [0.5, 0.7],
    [1.0, 2.0, 3.0, 4.0, 5.0],
    [0.12, 0.31, 0.25, 0.4, 0.18, 0.22, 0.35, 0.29],
    [120.0, 180.0, 150.0, 95.0],
]


def scipys(values: list[float]) -> tuple[float, float]:
    """(mean, half-width) of scipy's 95 % t-interval: n − 1 degrees of freedom, scale = s/√n."""
    v = np.asarray(values, float)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    return (lo + hi) / 2, (hi - lo) / 2


@pytest.mark.core
@pytest.mark.parametrize("values", SAMPLES, ids=[f"n{len(s)}" for s in SAMPLES])
def test_t_interval_is_scipys_student_t_interval(values):
    mean, half = t_interval(values)
    expected = scipys(values)
    assert mean == pytest.approx(expected[0], rel=1e-12) and half == pytest.approx(expected[1], rel=1e-12)


@pytest.mark.core
def test_t_interval_matches_a_t_table():
    """Without scipy: 1..5 has s = √2.5 and t(0.975, 4) = 2.7764, so 3 ± 2.7764·√(2.5/5) = 3 ± 1.9632."""
    mean, half = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and half == pytest.approx(2.7764 * math.sqrt(0.5), abs=1e-4)


@pytest.mark.core
def test_missing_values_are_left_out_and_one_value_has_no_interval():
    assert t_interval([1.0, None, float("nan"), 3.0, float("inf")]) == t_interval([1.0, 3.0])
    assert t_interval([2.5]) == (2.5, None)
    mean, half = t_interval([None])
    assert math.isnan(mean) and half is None


def exact_bootstrap(*strata: list[float]) -> np.ndarray:
    """The IQM of every possible stratified resample (each stratum drawn with replacement on its own),
    each equally likely: the distribution a bootstrap samples from."""
    import itertools

    draws = [list(itertools.product(s, repeat=len(s))) for s in strata]
    values = [np.concatenate(parts) for parts in itertools.product(*draws)]
    return stats.trim_mean(np.stack(values), 0.25, axis=1)


def within_exact_quantiles(low: float, high: float, distribution: np.ndarray, slack: float = 0.015) -> bool:
    """``low``/``high`` are the exact distribution's 2.5 % / 97.5 % quantiles, up to ``slack``: a
    quantile q of a distribution with atoms is any x with P(X < x) ≤ q ≤ P(X ≤ x) (4,000 resamples
    estimate it to about ± 0.25 points; the slack is 6 times that)."""

    def is_quantile(x: float, q: float) -> bool:
        return (distribution < x - 1e-12).mean() <= q + slack and (distribution <= x + 1e-12).mean() >= q - slack

    return is_quantile(low, 0.025) and is_quantile(high, 0.975)


@pytest.mark.core
def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0]) == 4.5  # (3 + 4 + 5 + 6) / 4
    assert iqm([120.0, 180.0, 150.0, 95.0]) == 135.0  # (120 + 150) / 2
    assert iqm([0.2, 0.6]) == pytest.approx(0.4)  # two runs: nothing to trim
    assert iqm([1.0, 2.0, 3.0, 4.0, 100.0]) == pytest.approx(3.0)  # one cut each end: (2 + 3 + 4) / 3
    assert iqm([1.0, None, float("nan")]) == 1.0


@pytest.mark.core
def test_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    values = [0.1, 0.45, 0.5, 0.9, 0.3]
    interval = iqm_interval([values], "eval/success")
    assert interval.point == pytest.approx(iqm(values)) and interval.n == 5
    assert within_exact_quantiles(interval.low, interval.high, exact_bootstrap(values)), interval


@pytest.mark.core
def test_stratified_bootstrap_resamples_each_env_on_its_own():
    """Two envs of 3 seeds: the interval is the stratified one. Pooling the six runs into one sample
    (which can draw all six from one env) gives a wider distribution, which the interval must not match."""
    easy, hard = [0.8, 0.9, 1.0], [0.0, 0.1, 0.3]
    interval = iqm_interval([easy, hard], "eval/success")
    assert interval.point == pytest.approx(iqm(easy + hard)) and interval.n == 6
    stratified = exact_bootstrap(easy, hard)
    assert within_exact_quantiles(interval.low, interval.high, stratified), interval
    pooled = np.quantile(exact_bootstrap(easy + hard), [0.025, 0.975])
    assert interval.low > pooled[0] + 0.05 and interval.high < pooled[1] - 0.05, (interval, pooled)


@pytest.mark.core
def test_intervals_stay_in_the_metrics_range_and_need_two_runs():
    steps = iqm_interval([[0.0, 0.0, 0.0, 40.0]], "eval/time_at_goal")
    assert steps.low >= 0.0 and steps.point == 0.0  # never below zero steps
    one = iqm_interval([[0.4]], "eval/success")
    assert (one.point, one.low, one.high, one.n) == (0.4, None, None, 1) and one.text(3) == "0.400"
    fixed = iqm_interval([[0.3], [0.5, 0.7]], "eval/success")  # a one-run env is held fixed
    assert within_exact_quantiles(fixed.low, fixed.high, exact_bootstrap([0.3], [0.5, 0.7]))
    assert iqm_interval([[None]]).text(1) == "—"


def _parse(cell: str) -> tuple[float, float, float]:
    point, rest = cell.replace(",", "").split(" [")
    low, high = rest.rstrip("]").split(" ")
    return float(point), float(low), float(high)


def test_the_report_table_prints_iqm_and_bootstrap_interval():
    """Four seeds of one cell: each metric's cell is the IQM computed by hand and an interval where the
    exact bootstrap distribution puts 2.5 % and 97.5 %; no Student-t column below five seeds."""
    # Imported here: study_report imports the study runner, which imports Ray (not in the core install).
    from deepcrl.launch.study_report import results_table

    columns = {  # values, the IQM by hand (mean of the middle two), decimals
        "eval/time_at_goal": ([120.0, 180.0, 150.0, 95.0], 135.0, 1),
        "eval/time_at_goal_frac": ([0.24, 0.36, 0.3, 0.19], 0.27, 3),
        "eval/success": ([0.5, 0.75, 0.625, 0.375], 0.5625, 3),
        "env_steps": ([101_000, 99_000, 100_500, 98_000], 99_750, 0),
        "wall_time_s": ([310.0, 290.0, 355.0, 402.0], 332.5, 0),
    }
    results = [
        {"run": f"point_mass-d4-s{s}", "seed": s, "env": "point_mass", "depth": 4, "program_seeds": 1,
         **{metric: values[s] for metric, (values, _, _) in columns.items()}}
        for s in range(4)
    ]  # fmt: skip
    table = results_table(results)
    rows = [line for line in table.splitlines() if line.startswith("| point_mass |")]
    assert len(rows) == 1 and "mean ± t" not in table, table
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:3] == ["point_mass", "4", "4"], cells
    for cell, (values, by_hand, digits) in zip(cells[3:], columns.values(), strict=True):
        point, low, high = _parse(cell)
        assert point == pytest.approx(by_hand, abs=0.51 * 10**-digits), (cell, by_hand)
        exact = exact_bootstrap(values)
        lo, hi = np.quantile(exact, [0.01, 0.99])
        assert lo - 10**-digits <= low <= high <= hi + 10**-digits, (cell, lo, hi)
    five = results + [{**results[0], "run": "point_mass-d4-s4", "seed": 4}]
    table = results_table(five)
    assert "time at goal (steps): mean ± t" in table and "success (any time): mean ± t" in table
    row = next(line for line in table.splitlines() if line.startswith("| point_mass |"))
    t_cells = [c.strip() for c in row.strip("|").split("|")][-2:]
    success = [0.5, 0.75, 0.625, 0.375, 0.5]
    mean, half = scipys(success)
    assert t_cells[1] == f"{mean:.3f} ± {half:.3f}", t_cells
