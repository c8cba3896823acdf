"""Batched training view of a goal env: vmapped, truncated, auto-reset.

An episode ends at ``episode_length`` steps or when the env reports ``done``
itself (early termination, e.g. a fallen humanoid); the env then resets and
gets a new ``episode_id``, which is what hindsight relabeling uses to never
cross an episode boundary. Two reset rules:

- fresh (default): every finished episode gets a new reset — a new start
  (within the env's reset noise) and a new goal;
- ``reset_to_first_start``: each env returns to its *own first* start state and
  goal, as the paper's code did (Brax's AutoResetWrapper), so ``num_envs``
  envs train on ``num_envs`` fixed start/goal pairs for the whole run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from deepcrl.envs.base import GoalEnv, State


class VectorEnv:
    def __init__(
        self,
        env: GoalEnv,
        num_envs: int,
        episode_length: int | None = None,
        reset_to_first_start: bool = False,
    ):
        self.env = env
        self.num_envs = num_envs
        self.episode_length = int(episode_length or env.spec.episode_length)
        self.reset_to_first_start = bool(reset_to_first_start)
        self.spec = env.spec

    @property
    def action_size(self) -> int:
        return self.env.action_size

    def reset(self, rng: jax.Array) -> State:
        keys = jax.random.split(rng, self.num_envs + 1)
        state = jax.vmap(self.env.reset)(keys[1:])
        info = dict(state.info)
        info["steps"] = jnp.zeros(self.num_envs, jnp.int32)
        info["episode_id"] = jnp.zeros(self.num_envs, jnp.int32)
        info["rng"] = jax.random.split(keys[0], self.num_envs)
        if self.reset_to_first_start:
            info["first"] = (state.pipeline_state, state.obs, state.info["goal"])
        return state.replace(info=info)

    def step(self, state: State, action: jax.Array) -> State:
        """One step of every env; ``done`` marks envs whose episode just ended.

        After an ended episode the returned ``obs`` is already the first
        observation of the next episode (and ``episode_id`` has advanced).
        """
        info = state.info
        stepped = jax.vmap(self.env.step)(state.replace(info={"goal": info["goal"]}), action)
        steps = info["steps"] + 1
        # Truncation at episode_length, or the env's own early termination.
        done = (steps >= self.episode_length) | (stepped.done > 0)

        split = jax.vmap(lambda k: jax.random.split(k))(info["rng"])
        stepped_parts = (stepped.pipeline_state, stepped.obs, stepped.info["goal"])

        def pick(new, old):
            mask = done.reshape(done.shape + (1,) * (old.ndim - 1))
            return jnp.where(mask, new, old)

        def with_resets(parts):
            # Reset only when some episode ended (usually all at once), so the
            # physics' reset cost is not paid on every step.
            fresh = jax.vmap(self.env.reset)(split[:, 1])
            return jax.tree_util.tree_map(pick, (fresh.pipeline_state, fresh.obs, fresh.info["goal"]), parts)

        if self.reset_to_first_start:
            merged = jax.tree_util.tree_map(pick, info["first"], stepped_parts)
        else:
            merged = jax.lax.cond(done.any(), with_resets, lambda parts: parts, stepped_parts)
        new_info = {
            "goal": merged[2],
            "steps": jnp.where(done, 0, steps),
            "episode_id": info["episode_id"] + done.astype(jnp.int32),
            "rng": split[:, 0],
        }
        if self.reset_to_first_start:
            new_info["first"] = info["first"]
        return stepped.replace(
            pipeline_state=merged[0], obs=merged[1], done=done.astype(jnp.float32), info=new_info
        )
