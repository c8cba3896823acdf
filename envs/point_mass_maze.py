"""Point mass with momentum in the ant mazes: a cheap testbed where network depth can matter.

The layout, start (the ``R`` cell), goal sampler (the ``G`` cells) and wall
test all come from ``envs/maze.py`` with the ant mazes' cell size, so a
``point_mass_X_maze`` has exactly the geometry of ``ant_X_maze``; only the
robot differs. Choices, all in units of the cell size ``c`` (4 m, as the ant):

- **Momentum, bounded acceleration.** State ``(x, y, vx, vy)``; the action in
  ``[-1, 1]^2`` is an acceleration of at most ``0.05 c`` per step²; the
  velocity decays by 5 % a step and is clipped to ``0.25 c`` per step per
  axis. Reaching full speed or stopping takes ~5 steps and ~0.6 c, so the
  policy must brake before corners and at the goal: a greedy "head towards
  the goal" map (what a shallow net finds first) slams into walls and
  overshoots. Success is ``distance < c / 8`` (0.5 m, the ant mazes'
  threshold), so time at goal needs a controlled stop.
- **Episode length proportional to maze size:** ``steps_per_cell`` (10) ×
  the longest shortest path, in cells, from ``R`` to a ``G`` cell (u4: 100
  steps, hardest: 200) — long enough to reach the farthest goal and stay
  there, short enough that aimless wandering rarely gets there.
- **Walls.** Each step moves along x, then along y. A move along one axis is
  shorter than a cell, so it can only end in the current cell or the
  neighbouring one: if that end lies in a wall the mass stops ``1e-3 c``
  before the shared face and that velocity component is zeroed (it slides
  along the wall on the other axis). No tunnelling at any speed the dynamics
  allow, and never a position inside a wall cell.
"""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl.envs.base import GoalEnv, GoalSpec
from deepcrl.envs.maze import Maze

__all__ = ["EVAL_MAZES", "MAZES", "PointMassMaze", "longest_goal_path"]

# Layout names in envs/maze.py (the ant mazes'); ``point_mass_<name>_maze`` and, where the ant
# maze has one, ``point_mass_<name>_maze_eval`` (same walls and start, far goal cells only).
MAZES = ("u4", "u5", "big", "hardest")
EVAL_MAZES = ("u4", "u5", "big")
ANT_CELL_SIZE = 4.0


def longest_goal_path(grid: np.ndarray) -> int:
    """Cells on the longest of the shortest 4-connected paths from ``R`` to any ``G`` cell."""
    start = tuple(int(v) for v in np.argwhere(grid == "R")[0])
    dist = {start: 0}
    queue = deque([start])
    while queue:
        i, j = queue.popleft()
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            n = (i + di, j + dj)
            if 0 <= n[0] < grid.shape[0] and 0 <= n[1] < grid.shape[1] and grid[n] != "1" and n not in dist:
                dist[n] = dist[(i, j)] + 1
                queue.append(n)
    reachable = [dist[tuple(int(v) for v in g)] for g in np.argwhere(grid == "G") if tuple(g) in dist]
    if not reachable:
        raise ValueError("no goal cell is reachable from the start")
    return max(reachable)


class PointMassMaze(GoalEnv):
    def __init__(
        self,
        maze: str,
        cell_size: float = ANT_CELL_SIZE,
        max_accel: float = 0.05,
        max_speed: float = 0.25,
        damping: float = 0.95,
        steps_per_cell: int = 10,
        episode_length: int = 0,
        backend: str = "jax",
    ):
        """``max_accel`` and ``max_speed`` are in cells per step (²); ``episode_length`` 0: sized from the maze."""
        if backend != "jax":
            raise ValueError(f"point-mass mazes run only on the 'jax' backend, not {backend!r}")
        if not 0.0 < max_speed < 0.5:
            raise ValueError("max_speed must lie in (0, 0.5) cells per step (no tunnelling)")
        self.maze = Maze.from_name(maze, cell_size)
        # An ``_eval`` layout (far goals only) keeps its training layout's episode length.
        sized_by = Maze.from_name(maze.removesuffix("_eval"), cell_size).grid
        self.cell = float(cell_size)
        self.max_accel = max_accel * self.cell
        self.max_speed = max_speed * self.cell
        self.damping = float(damping)
        self.margin = 1e-3 * self.cell
        rows, cols = self.maze.grid.shape
        ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        self._centres = np.asarray(self.maze.cell_center(ii, jj), np.float32)  # [rows, cols, 2]
        length = episode_length or steps_per_cell * longest_goal_path(sized_by)
        self.spec = GoalSpec(
            state_size=4,
            goal_indices=(0, 1),
            success_threshold=self.cell / 8,
            easy_threshold=self.cell / 2,
            episode_length=int(length),
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

    def in_wall(self, xy: jax.Array) -> jax.Array:
        """True where a position lies in a wall cell or outside the grid (the maze's own test)."""
        return self.maze.in_wall(xy)

    def coverage_grid(self) -> dict:
        """Two bins per cell over a square covering the grid, as plain data; wall bins are not free."""
        x0, x1, y0, y1 = self.maze.extent
        side = max(x1 - x0, y1 - y0)
        bins = 2 * int(round(side / self.cell))
        centres_x = x0 + (np.arange(bins) + 0.5) * side / bins
        centres_y = y0 + (np.arange(bins) + 0.5) * side / bins
        xy = np.stack(np.meshgrid(centres_x, centres_y, indexing="ij"), axis=-1)
        free = ~np.asarray(self.in_wall(jnp.asarray(xy, jnp.float32)))
        return {"x_min": x0, "x_max": x0 + side, "y_min": y0, "y_max": y0 + side, "bins": bins, "free": free}

    def _reset(self, rng: jax.Array):
        start_rng, goal_rng = jax.random.split(rng)
        jitter = jax.random.uniform(start_rng, (2,), minval=-0.05, maxval=0.05) * self.cell
        pos = jnp.asarray(self.maze.start_xy) + jitter
        state = jnp.concatenate([pos, jnp.zeros(2)])
        return state, state, self.maze.sample_goal(goal_rng)

    def _move_axis(self, pos: jax.Array, vel: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
        """Move along one axis; stop just short of a wall face and zero that velocity component."""
        moved = pos.at[axis].add(vel[axis])
        i, j = self.maze.cell_of(pos)
        centre = jnp.asarray(self._centres)[i, j, axis]
        face = centre + jnp.sign(vel[axis]) * (0.5 * self.cell - self.margin)
        hit = self.in_wall(moved)
        new_pos = jnp.where(hit, pos.at[axis].set(face), moved)
        return new_pos, jnp.where(hit, vel.at[axis].set(0.0), vel)

    def _step(self, state: jax.Array, action: jax.Array):
        pos, vel = state[:2], state[2:]
        accel = jnp.clip(action, -1.0, 1.0) * self.max_accel
        vel = jnp.clip(self.damping * vel + accel, -self.max_speed, self.max_speed)
        pos, vel = self._move_axis(pos, vel, 0)
        pos, vel = self._move_axis(pos, vel, 1)
        new = jnp.concatenate([pos, vel])
        return new, new
