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

    success: reached the goal at any step; time_at_goal: fraction of the
    episode's steps at the goal; final_distance: distance at its last step.
    An env whose episode ends early (termination) is scored on that episode
    only: the auto-reset episode that follows is masked out.
    """
    k_reset, k_act = jax.random.split(key)
    env_state = venv.reset(k_reset)
    _, _, m = unroll(venv, policy, env_state, k_act, venv.episode_length)
    ended_before = jnp.cumsum(m["done"], axis=0) - m["done"]  # [T, N]: an earlier step ended the episode
    alive = (ended_before == 0).astype(jnp.float32)
    steps = alive.sum(axis=0)
    last = (steps - 1).astype(jnp.int32)
    pick_last = lambda x: jnp.take_along_axis(x, last[None, :], axis=0)[0]
    return {
        "success": (m["success"] * alive).max(axis=0).mean(),
        "success_easy": (m["success_easy"] * alive).max(axis=0).mean(),
        "time_at_goal": ((m["success"] * alive).sum(axis=0) / steps).mean(),
        "final_distance": pick_last(m["distance"]).mean(),
        "min_distance": jnp.where(alive > 0, m["distance"], jnp.inf).min(axis=0).mean(),
        "episode_length": steps.mean(),
    }
