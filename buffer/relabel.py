"""Hindsight goal relabeling on batches of trajectory segments.

Shared by both runtimes: the on-device buffer of ``single`` and the Reverb
learner both hand segments ``{state [B, L, S], action [B, L, A], episode_id [B, L]}``
to ``relabel_segments``. Step i's goal is the goal-part of state i + k with
P(k) ∝ γ^k for k ≥ 1, truncated to the steps of the *same* episode that the
segment holds. Steps with no such future are marked invalid and never chosen.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def steps_left_in_episode(episode_id: jax.Array) -> jax.Array:
    """For each position, how many later positions of the segment share its episode.

    Episode ids are contiguous runs along the last axis, so the count is the
    distance to the end of the run (a reverse cumulative min of run ends).
    """
    length = episode_id.shape[-1]
    idx = jnp.arange(length)
    is_run_end = jnp.concatenate(
        [episode_id[..., 1:] != episode_id[..., :-1], jnp.ones(episode_id.shape[:-1] + (1,), bool)], axis=-1
    )
    run_end = jax.lax.cummin(jnp.where(is_run_end, idx, length), axis=episode_id.ndim - 1, reverse=True)
    return run_end - idx


def truncated_geometric(key: jax.Array, max_offset: jax.Array, gamma: float) -> jax.Array:
    """Exact inverse-CDF draw of k ∈ {1..max_offset} with P(k) ∝ γ^k; 0 where max_offset is 0."""
    u = jax.random.uniform(key, max_offset.shape)
    m = jnp.maximum(max_offset, 1).astype(jnp.float32)
    # P(k ≤ x) = (1 − γ^x) / (1 − γ^m); solve for the smallest integer x with CDF ≥ u.
    k = jnp.ceil(jnp.log1p(-u * (1.0 - gamma**m)) / jnp.log(gamma))
    k = jnp.clip(k, 1, m).astype(jnp.int32)
    return jnp.where(max_offset > 0, k, 0)


def relabel_segments(
    key: jax.Array, segments: dict[str, jax.Array], goal_indices: tuple[int, ...], gamma: float
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Flatten segments to transitions with hindsight goals and a validity mask.

    Returns ``({"state", "action", "goal", "offset"} each [B·L, ...], valid [B·L])``.
    """
    state, action, episode_id = segments["state"], segments["action"], segments["episode_id"]
    num, length = episode_id.shape
    left = steps_left_in_episode(episode_id)
    offset = truncated_geometric(key, left, gamma)
    future = jnp.minimum(jnp.arange(length) + offset, length - 1)
    future_state = jnp.take_along_axis(state, future[..., None], axis=1)
    goal = future_state[..., jnp.asarray(goal_indices)]
    flat = lambda x: x.reshape((num * length,) + x.shape[2:])
    transitions = {"state": flat(state), "action": flat(action), "goal": flat(goal), "offset": flat(offset)}
    return transitions, flat(left > 0)


def select_valid(
    key: jax.Array, transitions: dict[str, jax.Array], valid: jax.Array, count: int
) -> dict[str, jax.Array]:
    """Pick ``count`` valid transitions in random order, without repeats while enough exist.

    Invalid rows are sorted behind valid ones and the pick wraps around the
    valid prefix, so an invalid transition is never returned (given ≥ 1 valid).
    """
    order = jnp.argsort(jnp.where(valid, jax.random.uniform(key, valid.shape), 2.0))
    num_valid = jnp.maximum(valid.sum(), 1)
    idx = order[jnp.arange(count) % num_valid]
    return jax.tree_util.tree_map(lambda x: x[idx], transitions)


def relabeled_minibatches(
    key: jax.Array,
    segments: dict[str, jax.Array],
    goal_indices: tuple[int, ...],
    gamma: float,
    num_minibatches: int,
    batch_size: int,
) -> dict[str, jax.Array]:
    """Segments → ``num_minibatches`` shuffled minibatches of relabeled transitions."""
    k_relabel, k_select = jax.random.split(key)
    transitions, valid = relabel_segments(k_relabel, segments, goal_indices, gamma)
    picked = select_valid(k_select, transitions, valid, num_minibatches * batch_size)
    return jax.tree_util.tree_map(lambda x: x.reshape((num_minibatches, batch_size) + x.shape[1:]), picked)


def segments_needed(num_transitions: int, segment_length: int) -> int:
    """Segments to sample so that at least ``num_transitions`` valid steps exist.

    A segment no longer than an episode crosses at most one boundary, losing at
    most two steps (the last step of each run has no future).
    """
    return -(-num_transitions // max(segment_length - 2, 1)) + 1
