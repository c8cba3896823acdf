"""Exploration coverage: visited free cells of a fixed grid and the spread of visited goals."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from deepcrl.collector.coverage import (
    CoverageGrid,
    coverage_metrics,
    grid_for,
    init_coverage,
    update_coverage,
)
from deepcrl.envs import make_env


def test_coverage_counts_cells_and_spread_by_hand():
    grid = CoverageGrid(0.0, 4.0, 0.0, 4.0, bins=4)
    cov = init_coverage(grid, goal_size=2)
    cov = update_coverage(cov, jnp.array([[0.5, 0.5], [0.6, 0.4], [3.5, 3.5], [9.0, 9.0]]), grid)
    m = coverage_metrics(cov, grid)
    assert m["coverage/cells_visited_frac"] == 2 / 16  # the out-of-grid point counts for no cell
    goals = np.array([[0.5, 0.5], [0.6, 0.4], [3.5, 3.5], [9.0, 9.0]])
    np.testing.assert_allclose(m["coverage/goal_spread"], np.sqrt(goals.var(0).mean()), rtol=1e-5)


def test_wall_cells_are_not_free_and_wider_data_covers_more():
    env = make_env("point_mass_walls")
    grid = grid_for(env)
    assert 0 < (~grid.free_mask).sum() < grid.bins**2  # the divider removes some cells
    rng = np.random.default_rng(0)
    narrow = rng.normal(0, 0.05, (5000, 2)) + np.array([-0.5, -0.5])
    wide = rng.uniform(-1, 1, (5000, 2))
    frac = lambda pts: coverage_metrics(update_coverage(init_coverage(grid, 2), jnp.asarray(pts), grid), grid)
    n, w = frac(narrow), frac(wide)
    assert n["coverage/cells_visited_frac"] < 0.05 < 0.9 < w["coverage/cells_visited_frac"]
    assert n["coverage/goal_spread"] < w["coverage/goal_spread"]
