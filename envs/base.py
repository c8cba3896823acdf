"""The goal-conditioned environment interface shared by every env and runtime.

An env is a Brax ``Env`` (pure ``reset(rng)`` / ``step(state, action)``) whose
observation is ``state ⊕ goal``. ``GoalSpec`` tells the learner where the goal
lives inside the state, so any stored state can become a hindsight goal.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

__all__ = ["GoalSpec", "GoalEnv", "State", "goal_metrics"]


@dataclasses.dataclass(frozen=True)
class GoalSpec:
    """Static description of an env's observation layout and success rule."""

    state_size: int
    goal_indices: tuple[int, ...]
    success_threshold: float
    easy_threshold: float
    episode_length: int

    @property
    def goal_size(self) -> int:
        return len(self.goal_indices)

    @property
    def observation_size(self) -> int:
        return self.state_size + self.goal_size

    def goal_of(self, state: jax.Array) -> jax.Array:
        """The goal-part of a (batch of) state vector(s)."""
        return state[..., jnp.asarray(self.goal_indices)]

    def split_obs(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return obs[..., : self.state_size], obs[..., self.state_size :]


def goal_metrics(spec: GoalSpec, obs: jax.Array) -> dict[str, jax.Array]:
    """Distance to goal and success flags, computed from the observation alone."""
    state, goal = spec.split_obs(obs)
    distance = jnp.linalg.norm(spec.goal_of(state) - goal, axis=-1)
    return {
        "distance": distance,
        "success": (distance < spec.success_threshold).astype(jnp.float32),
        "success_easy": (distance < spec.easy_threshold).astype(jnp.float32),
    }


class GoalEnv(Env):
    """Base class: subclasses implement ``_reset`` and ``_step`` on raw states.

    ``_reset(rng) -> (physics_state, state_vec, goal)`` and
    ``_step(physics_state, action) -> (physics_state, state_vec)``. The goal is
    kept in ``info`` and appended to every observation here, and the goal
    metrics are filled in, so subclasses only model their dynamics.
    Optionally ``_terminated(physics_state) -> bool`` ends an episode early
    (e.g. a fallen humanoid); ``done`` reports it and ``VectorEnv`` resets.
    """

    spec: GoalSpec

    def _reset(self, rng: jax.Array):
        raise NotImplementedError

    def _step(self, physics_state, action: jax.Array):
        raise NotImplementedError

    def _terminated(self, physics_state) -> jax.Array:
        return jnp.zeros((), dtype=bool)

    def describe(self) -> dict:
        """Static facts about this env, for listings (``run.py --list_envs``)."""
        spec = self.spec
        return {
            "observation_size": spec.observation_size,
            "state_size": spec.state_size,
            "action_size": int(self.action_size),
            "goal_indices": tuple(spec.goal_indices),
            "success_threshold": spec.success_threshold,
            "easy_threshold": spec.easy_threshold,
            "episode_length": spec.episode_length,
            "step_s": round(float(getattr(self, "dt", float("nan"))), 6),  # simulated seconds per env step
            "backend": self.backend,
        }

    def reset(self, rng: jax.Array) -> State:
        physics_state, state_vec, goal = self._reset(rng)
        obs = jnp.concatenate([state_vec, goal])
        zero = jnp.zeros(())
        return State(
            pipeline_state=physics_state,
            obs=obs,
            reward=zero,
            done=zero,
            metrics=goal_metrics(self.spec, obs),
            info={"goal": goal},
        )

    def step(self, state: State, action: jax.Array) -> State:
        physics_state, state_vec = self._step(state.pipeline_state, action)
        obs = jnp.concatenate([state_vec, state.info["goal"]])
        metrics = goal_metrics(self.spec, obs)
        # Reward is only reported (CRL never reads it): 1 inside the threshold.
        done = self._terminated(physics_state).astype(jnp.float32)
        return state.replace(
            pipeline_state=physics_state, obs=obs, reward=metrics["success"], done=done, metrics=metrics
        )

    @property
    def observation_size(self) -> int:
        return self.spec.observation_size
