"""A cheap pure-JAX 2-D point mass that must reach a goal, optionally among walls.

It exists so tests and CPU demos can prove the algorithm learns in seconds:
the state is the (x, y) position, the action a velocity in [-1, 1]^2 scaled to
``max_step`` per step, and walls are axis-aligned boxes the mass slides along
but cannot enter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl.envs.base import GoalEnv, GoalSpec

# Walls as (x_min, y_min, x_max, y_max). One wall splits the arena, leaving a gap
# at the top, so reaching the other side takes a detour.
DIVIDER_WALLS = ((-0.1, -1.0, 0.1, 0.4),)


class PointMass(GoalEnv):
    def __init__(
        self,
        arena_half_size: float = 1.0,
        max_step: float = 0.1,
        walls: tuple[tuple[float, float, float, float], ...] = (),
        episode_length: int = 50,
        success_threshold: float = 0.1,
        backend: str = "jax",
    ):
        if backend != "jax":
            raise ValueError(f"point_mass runs only on the 'jax' backend, not {backend!r}")
        self.arena = float(arena_half_size)
        self.max_step = float(max_step)
        self.walls = np.asarray(walls, dtype=np.float32).reshape(-1, 4)
        self.spec = GoalSpec(
            state_size=2,
            goal_indices=(0, 1),
            success_threshold=success_threshold,
            easy_threshold=2 * success_threshold,
            episode_length=episode_length,
        )

    @property
    def action_size(self) -> int:
        return 2

    @property
    def backend(self) -> str:
        return "jax"

    @property
    def dt(self) -> float:
        return 1.0

    def coverage_grid(self) -> dict:
        """A 20×20 grid over the arena as plain data; cells whose centre lies in a wall are not free."""
        bins = 20
        centres = (np.arange(bins) + 0.5) / bins * 2 * self.arena - self.arena
        xy = np.stack(np.meshgrid(centres, centres, indexing="ij"), axis=-1)
        free = ~np.asarray(self.in_wall(jnp.asarray(xy)))
        a = self.arena
        return {"x_min": -a, "x_max": a, "y_min": -a, "y_max": a, "bins": bins, "free": free}

    def in_wall(self, pos: jax.Array) -> jax.Array:
        """True where a position lies inside any wall box."""
        if len(self.walls) == 0:
            return jnp.zeros(pos.shape[:-1], dtype=bool)
        w = jnp.asarray(self.walls)
        x, y = pos[..., None, 0], pos[..., None, 1]
        inside = (x > w[:, 0]) & (x < w[:, 2]) & (y > w[:, 1]) & (y < w[:, 3])
        return inside.any(-1)

    def _sample_free(self, rng: jax.Array) -> jax.Array:
        # Rejection sampling with a fixed number of candidates; with the walls
        # used here the chance that all 32 land in walls is below 1e-20.
        cands = jax.random.uniform(rng, (32, 2), minval=-self.arena, maxval=self.arena)
        return cands[jnp.argmin(self.in_wall(cands))]

    def _reset(self, rng: jax.Array):
        start_rng, goal_rng = jax.random.split(rng)
        pos = self._sample_free(start_rng)
        goal = self._sample_free(goal_rng)
        return pos, pos, goal

    def _step(self, pos: jax.Array, action: jax.Array):
        delta = jnp.clip(action, -1.0, 1.0) * self.max_step

        def clamp(p):
            return jnp.clip(p, -self.arena, self.arena)

        full = clamp(pos + delta)
        slide_x = clamp(pos + delta * jnp.array([1.0, 0.0]))
        slide_y = clamp(pos + delta * jnp.array([0.0, 1.0]))
        new = jnp.where(
            ~self.in_wall(full),
            full,
            jnp.where(~self.in_wall(slide_x), slide_x, jnp.where(~self.in_wall(slide_y), slide_y, pos)),
        )
        return new, new
