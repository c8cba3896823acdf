"""Vectorized acting and deterministic evaluation, as pure jittable functions."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from deepcrl.envs.base import State
from deepcrl.envs.wrappers import VectorEnv

PolicyFn = Callable[[jax.Array, jax.Array], jax.Array]  # (obs [N, D], key) -> action [N, A]


def unroll(
    venv: VectorEnv, policy: PolicyFn, env_state: State, key: jax.Array, length: int
) -> tuple[State, dict, dict]:
    """Act ``length`` steps in every env.

    Returns the next env state, time-major steps ``{state [U, N, S], action
    [U, N, A], episode_id [U, N]}`` in the layout both replay paths store, and
    per-step metrics of the training episodes (success, distance, done).
    """
    state_size = venv.spec.state_size

    def step(env_state, k):
        action = policy(env_state.obs, k)
        record = {
            "state": env_state.obs[:, :state_size],
            "action": action,
            "episode_id": env_state.info["episode_id"],
        }
        next_state = venv.step(env_state, action)
        metrics = {**next_state.metrics, "done": next_state.done}
        return next_state, (record, metrics)

    env_state, (steps, metrics) = jax.lax.scan(step, env_state, jax.random.split(key, length))
    return env_state, steps, metrics


def evaluate(venv: VectorEnv, policy: PolicyFn, key: jax.Array) -> dict[str, jax.Array]:
    """One full episode per eval env; averages over envs of the episode metrics.

    time_at_goal: steps within the success threshold, counted over the full
    ``episode_length`` (the paper's Table 1 figure, e.g. 286 out of 1000);
    time_at_goal_frac: the same divided by ``episode_length``. success:
    reached the goal at any step. An env whose episode ends early
    (termination) is scored on that episode only: the auto-reset episode that
    follows is masked out, so it counts nothing more, and its remaining steps
    count as not at the goal. final_distance: distance at the episode's last step.
    """
    k_reset, k_act = jax.random.split(key)
    env_state = venv.reset(k_reset)
    _, _, m = unroll(venv, policy, env_state, k_act, venv.episode_length)
    return episode_metrics(m, venv.episode_length)


def episode_metrics(m: dict[str, jax.Array], episode_length: int) -> dict[str, jax.Array]:
    """Per-env first-episode scores of time-major step metrics ``[T, N]``, averaged over envs."""
    ended_before = jnp.cumsum(m["done"], axis=0) - m["done"]  # [T, N]: an earlier step ended the episode
    alive = (ended_before == 0).astype(jnp.float32)
    steps = alive.sum(axis=0)
    last = (steps - 1).astype(jnp.int32)
    pick_last = lambda x: jnp.take_along_axis(x, last[None, :], axis=0)[0]
    at_goal = (m["success"] * alive).sum(axis=0)
    return {
        "success": (m["success"] * alive).max(axis=0).mean(),
        "success_easy": (m["success_easy"] * alive).max(axis=0).mean(),
        "time_at_goal": at_goal.mean(),
        "time_at_goal_frac": (at_goal / episode_length).mean(),
        "final_distance": pick_last(m["distance"]).mean(),
        "min_distance": jnp.where(alive > 0, m["distance"], jnp.inf).min(axis=0).mean(),
        "episode_length": steps.mean(),
    }
