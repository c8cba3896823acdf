"""The study report's "mean ± x" is the 95 % Student-t interval over seeds: scipy's, on known numbers.

The study tests run one seed per cell, where the report prints no interval, so the interval itself
is checked here: ``rundir/stats.t_interval`` against ``scipy.stats.t.interval`` and a t-table, and
the report's results table (``launch/study_report.py``) against the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from deepcrl.rundir.stats import t_interval

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


def _cell(values: list[float], digits: int) -> str:
    mean, half = scipys(values)
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if digits else f"{mean:,.0f} ± {half:,.0f}"


def test_the_report_table_prints_scipys_interval():
    """Four seeds of one cell: each metric's cell is scipy's interval, rounded as the report rounds."""
    # Imported here: study_report imports the study runner, which imports Ray (not in the core install).
    from deepcrl.launch.study_report import results_table

    columns = {
        "eval/time_at_goal": ([120.0, 180.0, 150.0, 95.0], 1),
        "eval/time_at_goal_frac": ([0.24, 0.36, 0.3, 0.19], 3),
        "eval/success": ([0.5, 0.75, 0.625, 0.375], 3),
        "env_steps": ([101_000, 99_000, 100_500, 98_000], 0),
        "wall_time_s": ([310.0, 290.0, 355.0, 402.0], 0),
    }
    results = [
        {"run": f"point_mass-d4-s{s}", "seed": s, "env": "point_mass", "depth": 4, "program_seeds": 1,
         **{metric: values[s] for metric, (values, _) in columns.items()}}
        for s in range(4)
    ]  # fmt: skip
    rows = [line for line in results_table(results).splitlines() if line.startswith("| point_mass |")]
    assert len(rows) == 1, rows
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:3] == ["point_mass", "4", "4"], cells
    assert cells[3:] == [_cell(values, digits) for values, digits in columns.values()], cells
