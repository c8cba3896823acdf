"""Batched training view of a goal env: vmapped, truncated, auto-reset.

Unlike Brax's AutoResetWrapper (which replays the first state of the batch),
every finished episode gets a *fresh* reset — a new start and a new goal — and
a new ``episode_id``, which is what hindsight relabeling uses to never cross
an episode boundary. An episode ends at ``episode_length`` steps or when the
env reports ``done`` itself (early termination, e.g. a fallen humanoid).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from deepcrl.envs.base import GoalEnv, State


class VectorEnv:
    def __init__(self, env: GoalEnv, num_envs: int, episode_length: int | None = None):
        self.env = env
        self.num_envs = num_envs
        self.episode_length = int(episode_length or env.spec.episode_length)
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

        def with_resets(parts):
            # Reset only when some episode ended (usually all at once), so the
            # physics' reset cost is not paid on every step.
            fresh = jax.vmap(self.env.reset)(split[:, 1])

            def pick(new, old):
                mask = done.reshape(done.shape + (1,) * (old.ndim - 1))
                return jnp.where(mask, new, old)

            return jax.tree_util.tree_map(pick, (fresh.pipeline_state, fresh.obs, fresh.info["goal"]), parts)

        merged = jax.lax.cond(done.any(), with_resets, lambda parts: parts, stepped_parts)
        new_info = {
            "goal": merged[2],
            "steps": jnp.where(done, 0, steps),
            "episode_id": info["episode_id"] + done.astype(jnp.int32),
            "rng": split[:, 0],
        }
        return stepped.replace(
            pipeline_state=merged[0], obs=merged[1], done=done.astype(jnp.float32), info=new_info
        )
