"""State coverage of collected data: how much of the x-y plane the collector has visited.

"Deep collectors explore more" becomes a number: the fraction of the free
cells of a fixed grid that some collected state fell into, plus the spread
(standard deviation) of the visited goal-coordinates. Envs may describe their
grid with plain data, ``coverage_grid() -> dict`` of ``CoverageGrid``'s fields
(walls marked not free), so envs never import the collector; others get a
square grid around the origin.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class CoverageGrid:
    x_min: float
    x_max: float
    y_min: float
    y_max: float
    bins: int
    free: np.ndarray | None = None  # [bins, bins] bool, indexed [x_bin, y_bin]; None: all free

    @property
    def free_mask(self) -> np.ndarray:
        return np.ones((self.bins, self.bins), bool) if self.free is None else np.asarray(self.free, bool)


DEFAULT_GRID = CoverageGrid(-20.0, 20.0, -20.0, 20.0, 40)  # 1 m cells around the start of locomotion tasks


def grid_for(env) -> CoverageGrid:
    describe = getattr(env, "coverage_grid", None)
    return CoverageGrid(**describe()) if callable(describe) else DEFAULT_GRID


def init_coverage(grid: CoverageGrid, goal_size: int) -> dict:
    return {
        "visits": jnp.zeros((grid.bins, grid.bins), jnp.float32),
        "count": jnp.zeros(()),
        "sum": jnp.zeros((goal_size,)),
        "sumsq": jnp.zeros((goal_size,)),
    }


def update_coverage(cov: dict, goals: jax.Array, grid: CoverageGrid) -> dict:
    """Add visited goal-coordinates ``[..., G]`` (x, y first) to the running statistics."""
    g = goals.reshape(-1, goals.shape[-1])
    fx = (g[:, 0] - grid.x_min) / (grid.x_max - grid.x_min)
    fy = (g[:, 1] - grid.y_min) / (grid.y_max - grid.y_min)
    inside = (fx >= 0) & (fx < 1) & (fy >= 0) & (fy < 1)
    ix = jnp.clip((fx * grid.bins).astype(jnp.int32), 0, grid.bins - 1)
    iy = jnp.clip((fy * grid.bins).astype(jnp.int32), 0, grid.bins - 1)
    visits = cov["visits"].at[ix, iy].add(inside.astype(jnp.float32))
    return {
        "visits": visits,
        "count": cov["count"] + g.shape[0],
        "sum": cov["sum"] + g.sum(0),
        "sumsq": cov["sumsq"] + (g**2).sum(0),
    }


def coverage_metrics(cov: dict, grid: CoverageGrid) -> dict[str, float]:
    free = grid.free_mask
    visited = np.asarray(cov["visits"]) > 0
    n = max(float(cov["count"]), 1.0)
    mean = np.asarray(cov["sum"]) / n
    var = np.maximum(np.asarray(cov["sumsq"]) / n - mean**2, 0.0)
    return {
        "coverage/cells_visited_frac": float((visited & free).sum() / max(free.sum(), 1)),
        "coverage/goal_spread": float(np.sqrt(var.mean())),
    }
