"""Point-mass mazes: the ant mazes' layouts, walls never crossed, goals and starts where they belong, a tiny study."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import is_number

from deepcrl.collector.coverage import CoverageGrid
from deepcrl.envs import make_env
from deepcrl.envs.ant import AntMaze
from deepcrl.envs.maze import maze_grid

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {
    "point_mass_u4_maze": "u4",
    "point_mass_u5_maze": "u5",
    "point_mass_big_maze": "big",
    "point_mass_hardest_maze": "hardest",
    "point_mass_u4_maze_eval": "u4_eval",
    "point_mass_u5_maze_eval": "u5_eval",
    "point_mass_big_maze_eval": "big_eval",
}
TRAINING = [n for n in LAYOUTS if not n.endswith("_eval")]
DIRECTIONS = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)


@pytest.mark.parametrize("name, layout", LAYOUTS.items())
def test_layout_and_cell_size_are_the_ant_mazes(name, layout):
    env = make_env(name)
    np.testing.assert_array_equal(env.maze.grid, maze_grid(layout))
    assert env.cell == inspect.signature(AntMaze.__init__).parameters["cell_size"].default
    assert env.spec.success_threshold == env.cell / 8
    if name.endswith("_eval"):  # same walls and start, evaluated on the same clock as its training layout
        train = make_env(name.removesuffix("_eval"))
        np.testing.assert_array_equal(env.maze.grid == "1", train.maze.grid == "1")
        np.testing.assert_array_equal(env.maze.grid == "R", train.maze.grid == "R")
        assert env.spec.episode_length == train.spec.episode_length


def _free_positions(env, rng: np.random.Generator, per_cell: int = 8) -> np.ndarray:
    """Points spread over every free cell, up to its faces."""
    free = np.argwhere(env.maze.grid != "1")
    centres = env.maze.cell_center(free[:, 0], free[:, 1])
    offsets = rng.uniform(-0.499, 0.499, (len(free), per_cell, 2)) * env.cell
    return (centres[:, None, :] + offsets).reshape(-1, 2).astype(np.float32)


@pytest.mark.parametrize("name", TRAINING)  # the _eval layouts have the same walls (checked above)
def test_the_mass_never_enters_a_wall(name):
    env = make_env(name)
    rng = np.random.default_rng(0)
    step = jax.jit(jax.vmap(env.step))
    in_wall = jax.jit(env.in_wall)

    # Adversarial, one step: from anywhere in a free cell at top speed, accelerate straight on.
    pos = _free_positions(env, rng)
    assert not bool(in_wall(pos).any())
    dirs = DIRECTIONS[rng.integers(0, len(DIRECTIONS), len(pos))]
    start = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), len(pos)))
    ps = jnp.concatenate([pos, dirs * env.max_speed], -1)
    out = step(start.replace(pipeline_state=ps), jnp.asarray(dirs))
    assert not bool(in_wall(out.pipeline_state[:, :2]).any())

    # Long episodes from the start: each direction held, and random bang-bang actions.
    n = len(DIRECTIONS) + 24
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), n))
    held = jnp.asarray(np.concatenate([DIRECTIONS, np.zeros((24, 2), np.float32)]))

    def body(s, k):
        random = jnp.sign(jax.random.uniform(k, (n, 2), minval=-1, maxval=1)) * 2.0  # clipped to ±1
        s = jax.vmap(env.step)(s, jnp.where(jnp.arange(n)[:, None] < len(DIRECTIONS), held, random))
        return s, s.pipeline_state

    _, traj = jax.jit(lambda s: jax.lax.scan(body, s, jax.random.split(jax.random.PRNGKey(2), 300)))(state)
    traj = np.asarray(traj)
    assert not bool(in_wall(jnp.asarray(traj[..., :2])).any())
    assert np.abs(traj[..., 2:]).max() <= env.max_speed + 1e-6
    assert np.abs(traj[..., 2:]).max() >= 0.99 * env.max_speed  # top speed was reached somewhere
    # Random actions get somewhere: the walk leaves the start cell.
    assert (
        np.linalg.norm(traj[:, len(DIRECTIONS) :, :2] - traj[0, len(DIRECTIONS) :, :2], axis=-1).max()
        > env.cell
    )


def test_the_mass_slides_along_a_wall():
    env = make_env("point_mass_u4_maze")
    grid = env.maze.grid
    # A free cell with a wall below it (row + 1) and a free cell to its right (column + 1).
    i, j = next(
        (i, j) for i, j in np.argwhere(grid != "1") if grid[i + 1, j] == "1" and grid[i, j + 1] != "1"
    )
    centre = env.maze.cell_center(i, j)
    to_wall = np.sign(env.maze.cell_center(i + 1, j) - centre)  # one unit axis, whatever the frame
    to_free = np.sign(env.maze.cell_center(i, j + 1) - centre)
    wall_axis, free_axis = int(np.abs(to_wall).argmax()), int(np.abs(to_free).argmax())
    state = env.reset(jax.random.PRNGKey(0))
    start = jnp.concatenate([jnp.asarray(centre, jnp.float32), jnp.zeros(2)])
    s = state.replace(pipeline_state=start)
    step = jax.jit(env.step)
    for _ in range(5):  # push diagonally: into the wall on one axis, along the free way on the other
        s = step(s, jnp.asarray(to_wall + to_free, jnp.float32))
    moved = np.asarray(s.pipeline_state[:2] - start[:2])
    assert abs(moved[free_axis]) > 0.5 * env.cell  # it slid along the wall
    assert 0.49 * env.cell < abs(moved[wall_axis]) < 0.5 * env.cell  # pressed against the wall's face
    assert float(s.pipeline_state[2 + wall_axis]) == 0.0  # the wall stopped it
    assert not bool(env.in_wall(s.pipeline_state[:2]))


@pytest.mark.parametrize("name", LAYOUTS)
def test_starts_at_r_and_goals_only_in_goal_cells(name):
    env = make_env(name)
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(3), 512))
    goals = np.asarray(states.info["goal"])
    gi, gj = (np.asarray(v) for v in env.maze.cell_of(jnp.asarray(goals)))
    assert (env.maze.grid[gi, gj] == "G").all()
    # Every goal cell is drawn (512 draws, at most 20 cells).
    assert len(set(zip(gi.tolist(), gj.tolist(), strict=True))) == (env.maze.grid == "G").sum()
    si, sj = (np.asarray(v) for v in env.maze.cell_of(states.pipeline_state[:, :2]))
    assert (env.maze.grid[si, sj] == "R").all()
    np.testing.assert_allclose(states.pipeline_state[:, :2].mean(0), env.maze.start_xy, atol=0.1 * env.cell)
    np.testing.assert_array_equal(states.pipeline_state[:, 2:], 0.0)


@pytest.mark.parametrize("name", ["point_mass_u4_maze", "point_mass_hardest_maze"])
def test_coverage_grid_marks_walls_not_free(name):
    env = make_env(name)
    grid = CoverageGrid(**env.coverage_grid())
    free = grid.free_mask
    assert free.sum() == 4 * (env.maze.grid != "1").sum()  # two bins per cell along each axis
    size = (grid.x_max - grid.x_min) / grid.bins
    centres = np.stack(
        np.meshgrid(grid.x_min + (np.arange(grid.bins) + 0.5) * size, grid.y_min + (np.arange(grid.bins) + 0.5) * size, indexing="ij"),
        -1,
    )  # fmt: skip
    np.testing.assert_array_equal(free, ~np.asarray(env.in_wall(jnp.asarray(centres, jnp.float32))))


def test_tiny_depth_study_on_u4_has_every_cell(tmp_path):
    study_dir = tmp_path / "sweep"
    cmd = [
        sys.executable, str(ROOT / "launch" / "study.py"), "--study", "depth_sweep", "--scale", "cpu",
        "--envs", "point_mass_u4_maze", "--depths", "4,8", "--seeds", "1", "--max_concurrent", "1",
        "--set", "total_env_steps=4000", "--set", "num_envs=8", "--set", "num_eval_envs=8",
        "--set", "batch_size=32", "--set", "critic_width=16", "--set", "actor_width=16",
        "--set", "num_minibatches=2", "--set", "num_evals=2", "--set", "min_replay_steps_per_env=100",
        "--study_dir", str(study_dir),
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads((study_dir / "study.json").read_text())
    assert {n: r["state"] for n, r in state["runs"].items()} == {
        "point_mass_u4_maze-d4-s0": "done",
        "point_mass_u4_maze-d8-s0": "done",
    }
    tables = _tables((study_dir / "report.md").read_text())
    results = next(t for t in tables if "depth" in t[0] and any("success" in h for h in t[0]))
    coverage = next(t for t in tables if any("cells visited" in h for h in t[0]))
    for header, *rows in (results, coverage):
        assert sorted((r[0], r[header.index("depth")]) for r in rows) == [
            ("point_mass_u4_maze", "4"),
            ("point_mass_u4_maze", "8"),
        ]
        assert all(is_number(c) for r in rows for c in r[header.index("seeds") :]), rows
    cells = coverage[0].index(next(h for h in coverage[0] if "cells visited" in h))
    assert all(0 < float(r[cells].split("±")[0]) <= 1 for r in coverage[1:])  # a fraction of the free cells


def _tables(report: str) -> list[list[list[str]]]:
    """Each markdown table of the report as [header, *rows] (the separator line dropped)."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in report.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if previous.startswith("|"):
                tables[-1].append(cells)
            else:
                tables.append([cells])
        previous = line
    return tables
