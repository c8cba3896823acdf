"""The paper's setting (issue 8): time at goal, eval layouts and eval_env, first-start resets, presets.

Everything here runs on the pure-JAX point mass or on plain data, so it stays
cheap; the physics checks (maze frame, contacts, humanoid step) live in
tests/test_envs_suite.py next to its compiled-env fixture.
"""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli

from deepcrl.collector.coverage import grid_for
from deepcrl.collector.rollout import evaluate
from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import resolve
from deepcrl.configs.paper.envs import PAPER_ENVS
from deepcrl.configs.paper.envs import get_config as paper_env
from deepcrl.configs.presets import paper
from deepcrl.configs.studies import base_config, get_study
from deepcrl.configs.validation import ConfigError, reference_sgd_steps
from deepcrl.envs import EVAL_ENVS, make_env
from deepcrl.envs.maze import EVAL_MAZES, maze_grid
from deepcrl.envs.point_mass import PointMass
from deepcrl.envs.wrappers import VectorEnv

# -- time at goal -------------------------------------------------------------------


class ScriptedTrack(PointMass):
    """Moves 0.01 per step along +x from the origin; the goal's success disc is crossed in steps 101–200,
    and the episode terminates at step 300 (x = 3.0)."""

    def __init__(self):
        super().__init__(arena_half_size=100.0, max_step=0.01, episode_length=1000, success_threshold=0.5)

    def _reset(self, rng):
        pos = jnp.zeros(2)
        return pos, pos, jnp.array([1.505, 0.0])

    def _terminated(self, pos):
        return pos[0] > 2.995


def test_time_at_goal_counts_steps_over_the_full_episode_and_nothing_after_termination():
    venv = VectorEnv(ScriptedTrack(), num_envs=3, episode_length=1000)
    right = lambda obs, key: jnp.tile(jnp.array([1.0, 0.0]), (obs.shape[0], 1))  # noqa: E731
    m = jax.device_get(evaluate(venv, right, jax.random.PRNGKey(0)))
    # After the reset at step 300 the mass crosses the goal again (steps 401–500): not counted.
    assert m["episode_length"] == pytest.approx(300)
    assert m["time_at_goal"] == pytest.approx(100)  # out of 1000, as the paper's Table 1
    assert m["time_at_goal_frac"] == pytest.approx(0.1)  # not 100 / 300
    assert m["success"] == pytest.approx(1.0)


# -- resets -------------------------------------------------------------------------


@pytest.mark.parametrize("first", [True, False])
def test_reset_to_first_start_returns_each_env_to_its_own_first_start_and_goal(first):
    venv = VectorEnv(make_env("point_mass"), num_envs=8, episode_length=5, reset_to_first_start=first)
    state = venv.reset(jax.random.PRNGKey(0))
    obs0 = np.asarray(state.obs)
    assert len(np.unique(obs0[:, 2:], axis=0)) == 8  # every env has its own goal
    step = jax.jit(venv.step)
    starts, goals = [], []
    for t in range(10):  # two episodes
        state = step(state, jnp.full((8, 2), 0.5))
        if t in (4, 9):
            assert (np.asarray(state.done) == 1).all()
            starts.append(np.asarray(state.obs[:, :2]))
            goals.append(np.asarray(state.info["goal"]))
    for s, g in zip(starts, goals, strict=True):
        if first:
            np.testing.assert_array_equal(s, obs0[:, :2])
            np.testing.assert_array_equal(g, obs0[:, 2:])
        else:
            assert not np.isclose(g, obs0[:, 2:]).all(axis=1).any()  # fresh goals, every env
            assert not np.isclose(s, obs0[:, :2]).all(axis=1).any()


# -- evaluation layouts ---------------------------------------------------------------


def _path_lengths(grid: np.ndarray) -> dict[tuple[int, int], int]:
    """Cells → steps from the R cell through free cells (breadth-first)."""
    start = tuple(int(v) for v in np.argwhere(grid == "R")[0])
    dist, queue = {start: 0}, deque([start])
    while queue:
        i, j = queue.popleft()
        for n in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if grid[n] != "1" and n not in dist:
                dist[n] = dist[(i, j)] + 1
                queue.append(n)
    return dist


@pytest.mark.parametrize("train,ev", [*EVAL_MAZES.items(), ("big", "humanoid_big_eval")])
def test_eval_layouts_keep_walls_and_start_and_only_far_goal_cells(train, ev):
    t, e = maze_grid(train), maze_grid(ev)
    np.testing.assert_array_equal(t == "1", e == "1")
    np.testing.assert_array_equal(t == "R", e == "R")
    assert ((e == "G") <= (t == "G")).all()  # goals are a subset of the training goals
    dist = _path_lengths(t)
    train_goals = sorted(dist[tuple(c)] for c in np.argwhere(t == "G"))
    kept = [dist[tuple(c)] for c in np.argwhere(e == "G")]
    assert 0 < len(kept) < len(train_goals)
    assert min(kept) >= np.median(train_goals)  # only the far half (or farther)


def test_humanoid_big_eval_grid_has_one_more_goal_than_the_ants():
    assert (maze_grid("humanoid_big_eval") == "G").sum() == (maze_grid("big_eval") == "G").sum() + 1


@pytest.mark.parametrize("train,ev", sorted(EVAL_ENVS.items()))
def test_eval_envs_sample_goals_only_in_their_goal_cells(train, ev):
    env = make_env(ev)
    goals = np.asarray(jax.vmap(env.maze.sample_goal)(jax.random.split(jax.random.PRNGKey(0), 500)))
    cell = env.maze.cell_size
    ij = np.rint(goals / cell).astype(int)
    np.testing.assert_allclose(goals, ij * cell, atol=1e-5)  # goal cell centres, x = cell·i, y = cell·j
    assert set(env.maze.grid[ij[:, 0], ij[:, 1]]) == {"G"}
    assert len({tuple(v) for v in ij}) == (env.maze.grid == "G").sum()


# -- eval_env -----------------------------------------------------------------------


def test_build_eval_env_same_family_and_mismatch():
    c = get_config()
    c.env, c.eval_env = "point_mass_u4_maze", "point_mass_u4_maze_eval"
    assert resolve(c).eval_env().maze.grid.tolist() == maze_grid("u4_eval").tolist()
    c.eval_env = ""
    experiment = resolve(c)
    assert experiment.eval_env() is experiment.env()
    c.eval_env = "point_mass"  # 2-d state vs the maze's 4-d
    with pytest.raises(ConfigError, match="does not match"):
        resolve(c)


def test_eval_env_mismatch_is_one_line_and_exit_2():
    proc = run_cli(
        "--env", "point_mass", "--eval_env", "point_mass_u4_maze_eval", "--run_dir", "/nonexistent/x"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: eval_env") and "does not match" in lines[0]
    unknown = run_cli("--env", "point_mass", "--eval_env", "no_such_env", "--run_dir", "/nonexistent/x")
    assert unknown.returncode == 2 and "valid envs" in unknown.stderr


def test_physics_timestep_is_a_set_field_and_unsupported_envs_say_so():
    c = get_config()
    c.env, c.physics_timestep = "point_mass", 0.01
    with pytest.raises(ConfigError, match="physics_timestep is not supported by env 'point_mass'"):
        resolve(c)


# -- presets ----------------------------------------------------------------------------


def test_paper_presets_reset_to_first_start_and_evaluate_mazes_on_eval_layouts():
    assert not get_config().reset_to_first_start  # CPU default: fresh goals
    for name in PAPER_ENVS:
        c = paper_env(name)
        assert c.reset_to_first_start, name
        assert c.eval_env == EVAL_ENVS.get(name, ""), name
    assert paper_env("ant_big_maze").eval_env == "ant_big_maze_eval"  # the paper's job.slurm


@pytest.mark.parametrize("name", ["ant_u4_maze", "humanoid_big_maze_eval"])
def test_maze_coverage_grid_covers_the_maze_in_its_frame(name):
    env = make_env(name)
    grid = grid_for(env)
    assert grid.free_mask.sum() == 4 * (env.maze.grid != "1").sum()  # 2 × 2 bins per free cell
    x, y = env.maze.start_xy
    assert grid.x_min < x < grid.x_max and grid.y_min < y < grid.y_max


# ----------------------------------------------------------------------------- presets and SGD steps


@pytest.mark.parametrize("batch, steps", [(256, 800), (512, 800), (1024, 499), (4096, 124)])
def test_reference_sgd_steps_rule(batch, steps):
    assert reference_sgd_steps(512, 1000, batch) == steps


def test_paper_preset_epochs_and_steps_as_the_reference_computes_them():
    c = paper()
    c.env, c.episode_length = "point_mass", 1000  # the layout only needs the episode length
    assert (c.batch_size, c.total_env_steps, c.num_evals) == (512, 100_000_000, 100)
    experiment = resolve(c)
    layout = experiment.layout
    assert experiment.config.num_minibatches == 800  # resolved from 0 by the rule
    assert c.num_minibatches == 0  # the caller's config is left as it was
    # (100M − 1,000·512) // (100 · 512·62) = 31 collection steps per epoch, floor, prefill not counted
    assert (layout.num_epochs, layout.collections_per_epoch) == (100, 31)
    assert layout.total_env_steps == 17 * 31_744 + 100 * 31 * 31_744  # a little under 100M, as theirs


def test_batch_sweep_follows_the_sgd_rule_at_paper_scale():
    runs = get_study("batch_sweep").get_runs(
        ["ant_big_maze"], [0], "paper", {"depths": [4], "batch_sizes": [256, 1024, 4096]}
    )
    steps = {}
    for run in runs:
        c = base_config("paper", "ant_big_maze")
        c.update(run.overrides)
        c.env, c.eval_env, c.episode_length = "point_mass", "", 1000  # same layout rules, no physics to build
        steps[c.batch_size] = resolve(c).config.num_minibatches
    assert steps == {256: 800, 1024: 499, 4096: 124}


def test_actor_capped_at_512_layers_in_paper_presets_unless_asked():
    c = paper()
    c.env, c.critic_depth, c.actor_depth = "point_mass", 1024, 1024
    a = resolve(c).agent
    assert (a.actor.depth, a.critic.depth) == (512, 1024)
    c.max_actor_depth = 0
    assert resolve(c).agent.actor.depth == 1024
