"""The point-mass env and the vectorized training wrapper."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl.collector.rollout import evaluate
from deepcrl.envs import goal_metrics, make_env
from deepcrl.envs.point_mass import PointMass
from deepcrl.envs.wrappers import VectorEnv

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)


@pytest.mark.parametrize("name", ["point_mass", "point_mass_walls"])
def test_shapes_and_goal_indices(name):
    env = make_env(name)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert state.obs.shape == (env.spec.observation_size,) == (4,)
    nxt = jax.jit(env.step)(state, jnp.array([1.0, 0.0]))
    assert nxt.obs.shape == (4,)
    pos = nxt.pipeline_state
    np.testing.assert_allclose(env.spec.goal_of(nxt.obs[:2]), pos)  # goal indices point at (x, y)
    np.testing.assert_allclose(nxt.obs[2:], state.obs[2:])  # the goal stays fixed within an episode


def test_success_true_at_goal_false_far_away():
    spec = make_env("point_mass").spec
    at_goal = goal_metrics(spec, jnp.array([0.3, 0.3, 0.3, 0.35]))
    far = goal_metrics(spec, jnp.array([-0.9, -0.9, 0.9, 0.9]))
    assert float(at_goal["success"]) == 1.0 and float(far["success"]) == 0.0
    assert float(far["success_easy"]) == 0.0


def test_walls_block_motion():
    env = make_env("point_mass_walls")
    state = env.reset(jax.random.PRNGKey(0))
    state = state.replace(pipeline_state=jnp.array([-0.5, -0.5]))
    step = jax.jit(env.step)
    for _ in range(20):  # push right, straight at the divider
        state = step(state, jnp.array([1.0, 0.0]))
    x = float(state.pipeline_state[0])
    assert -0.2 < x <= -0.1 + 1e-6  # stopped within one step of the wall's left face
    free = env.reset(jax.random.PRNGKey(0)).replace(pipeline_state=jnp.array([-0.5, 0.7]))
    for _ in range(20):  # above the wall's top end the way is open
        free = step(free, jnp.array([1.0, 0.0]))
    assert float(free.pipeline_state[0]) > 0.5


def test_reset_never_starts_or_targets_inside_a_wall():
    env = make_env("point_mass_walls")
    states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 2000))
    assert not bool(env.in_wall(states.pipeline_state).any())
    assert not bool(env.in_wall(states.info["goal"]).any())


def test_vector_env_truncates_and_resets_with_new_goals():
    venv = VectorEnv(make_env("point_mass"), num_envs=8, episode_length=5)
    state = venv.reset(jax.random.PRNGKey(0))
    step = jax.jit(venv.step)
    goals0 = state.info["goal"]
    dones = []
    for _ in range(10):
        state = step(state, jnp.zeros((8, 2)))
        dones.append(np.asarray(state.done))
    dones = np.stack(dones)
    np.testing.assert_array_equal(dones[:, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(state.info["episode_id"], 2)
    assert not np.allclose(state.info["goal"], goals0)  # fresh goals, not a replay of the first reset


def test_evaluation_scores_only_the_first_episode_of_each_env():
    """An env that terminates early is not credited with the auto-reset episode that follows."""

    class EndsPastTheMiddle(PointMass):
        def _terminated(self, pos):
            return pos[0] > 0.0

    venv = VectorEnv(EndsPastTheMiddle(episode_length=40), num_envs=16, episode_length=40)
    go_right = lambda obs, k: jnp.tile(jnp.array([1.0, 0.0]), (obs.shape[0], 1))
    key = jax.random.PRNGKey(0)
    x0 = np.asarray(venv.reset(jax.random.split(key)[0]).obs[:, 0])
    # Moving right by 0.1 per step, the episode ends on the first step that crosses x = 0.
    expected = np.where(x0 > 0, 1, np.floor(-x0 / 0.1) + 1)
    m = evaluate(venv, go_right, key)
    np.testing.assert_allclose(float(m["episode_length"]), expected.mean(), rtol=1e-5)
    assert float(m["episode_length"]) < 40
