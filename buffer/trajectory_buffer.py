"""On-device ring buffer of per-env trajectories for the fused ``single`` mode.

Time-major storage ``[capacity, num_envs, ...]`` keeps each env's steps
contiguous, so sampling a window of L consecutive steps of one env is one
gather, and the window is exactly a "segment" as the Reverb path delivers it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TrajectoryBuffer:
    data: dict  # state [C, N, S], action [C, N, A], episode_id [C, N]
    insert_pos: jax.Array  # next time index to write
    size: jax.Array  # steps held per env (≤ capacity)

    @property
    def capacity(self) -> int:
        return self.data["episode_id"].shape[0]


def init_buffer(capacity: int, num_envs: int, state_size: int, action_size: int) -> TrajectoryBuffer:
    data = {
        "state": jnp.zeros((capacity, num_envs, state_size), jnp.float32),
        "action": jnp.zeros((capacity, num_envs, action_size), jnp.float32),
        "episode_id": jnp.zeros((capacity, num_envs), jnp.int32),
    }
    return TrajectoryBuffer(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def insert(buf: TrajectoryBuffer, steps: dict) -> TrajectoryBuffer:
    """Append ``U`` time steps ``{state [U, N, S], ...}``, overwriting the oldest (FIFO)."""
    length = steps["episode_id"].shape[0]
    idx = (buf.insert_pos + jnp.arange(length)) % buf.capacity
    data = {k: buf.data[k].at[idx].set(steps[k].astype(buf.data[k].dtype)) for k in buf.data}
    return TrajectoryBuffer(
        data, (buf.insert_pos + length) % buf.capacity, jnp.minimum(buf.size + length, buf.capacity)
    )


def sample_segments(buf: TrajectoryBuffer, key: jax.Array, num_segments: int, length: int) -> dict:
    """Uniform windows of ``length`` consecutive stored steps of uniformly chosen envs.

    Requires ``buf.size >= length`` (the caller guarantees it by prefilling).
    Returns batch-major ``{state [B, L, S], action [B, L, A], episode_id [B, L]}``.
    """
    num_envs = buf.data["episode_id"].shape[1]
    k_env, k_start = jax.random.split(key)
    env = jax.random.randint(k_env, (num_segments,), 0, num_envs)
    start = jax.random.randint(k_start, (num_segments,), 0, buf.size - length + 1)
    oldest = (buf.insert_pos - buf.size) % buf.capacity
    t = (oldest + start[:, None] + jnp.arange(length)[None, :]) % buf.capacity
    return {k: v[t, env[:, None]] for k, v in buf.data.items()}
