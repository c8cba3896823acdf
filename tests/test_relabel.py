"""Hindsight relabeling: same-episode futures only, geometric offsets; the on-device buffer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chisquare

from deepcrl.buffer.relabel import (
    relabel_segments,
    relabeled_minibatches,
    select_valid,
    steps_left_in_episode,
)
from deepcrl.buffer.trajectory_buffer import init_buffer, insert, sample_segments

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)


def _segments(episode_ids: np.ndarray):
    """States encode (episode id, time) so a goal reveals which step it came from."""
    num, length = episode_ids.shape
    t = np.broadcast_to(np.arange(length, dtype=np.float32), (num, length))
    state = np.stack([episode_ids.astype(np.float32), t, t * 0 + 7], axis=-1)
    return {
        "state": jnp.asarray(state),
        "action": jnp.zeros((num, length, 1)),
        "episode_id": jnp.asarray(episode_ids, jnp.int32),
    }


def test_steps_left_in_episode():
    ids = jnp.array([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    np.testing.assert_array_equal(steps_left_in_episode(ids), [[2, 1, 0, 1, 0, 0], [5, 4, 3, 2, 1, 0]])


def test_goals_never_cross_an_episode_boundary():
    rng = np.random.default_rng(0)
    ids = np.cumsum(rng.random((64, 40)) < 0.1, axis=1)  # many short episodes per segment
    segs = _segments(ids)
    trans, valid = relabel_segments(jax.random.PRNGKey(0), segs, goal_indices=(0, 1), gamma=0.9)
    src_ep, src_t = np.asarray(trans["state"][:, 0]), np.asarray(trans["state"][:, 1])
    goal_ep, goal_t = np.asarray(trans["goal"][:, 0]), np.asarray(trans["goal"][:, 1])
    valid = np.asarray(valid)
    assert valid.sum() > 0.5 * valid.size
    np.testing.assert_array_equal(goal_ep[valid], src_ep[valid])
    assert np.all(goal_t[valid] > src_t[valid])  # strictly in the future: k >= 1
    np.testing.assert_array_equal(goal_t[valid] - src_t[valid], np.asarray(trans["offset"])[valid])
    # Invalid rows are exactly the last step of each episode run within the segment.
    last_of_run = np.concatenate([ids[:, 1:] != ids[:, :-1], np.ones((64, 1), bool)], axis=1).reshape(-1)
    np.testing.assert_array_equal(~valid, last_of_run)


def test_selection_never_returns_invalid_transitions():
    ids = np.repeat(np.arange(20)[None], 8, axis=0)  # every step its own episode ...
    ids[:, 10:12] = 100  # ... except one 2-step episode per segment: 8 valid rows in total
    trans, valid = relabel_segments(jax.random.PRNGKey(1), _segments(ids), (0, 1), 0.99)
    assert int(valid.sum()) == 8
    picked = select_valid(jax.random.PRNGKey(2), trans, valid, 256)
    assert np.all(np.asarray(picked["goal"][:, 0]) == 100)
    assert np.all(np.asarray(picked["offset"]) == 1)


def test_offsets_follow_truncated_geometric_law():
    gamma, length, num = 0.9, 60, 4000
    segs = _segments(np.zeros((num, length), np.int64))  # one episode spanning every segment
    trans, valid = relabel_segments(jax.random.PRNGKey(7), segs, (0, 1), gamma)
    src_t = np.asarray(trans["state"][:, 1]).astype(int)
    offsets = np.asarray(trans["offset"])
    for start in (0, 45):  # far from the end (nearly untruncated) and close to it (truncated at 14)
        m = length - 1 - start
        observed = np.bincount(offsets[src_t == start], minlength=m + 1)[1:]
        p = gamma ** np.arange(1, m + 1)
        p /= p.sum()
        expected = p * observed.sum()
        # Pool the sparse tail so every expected count is >= 5.
        cut = int(np.argmax(expected < 5)) if np.any(expected < 5) else m
        obs_pooled, exp_pooled = observed[:cut], expected[:cut]
        if cut < m:
            obs_pooled = np.append(obs_pooled, observed[cut:].sum())
            exp_pooled = np.append(exp_pooled, expected[cut:].sum())
        assert chisquare(obs_pooled, exp_pooled).pvalue > 1e-3, (start, obs_pooled, exp_pooled)
    # The mean offset of an untruncated geometric with gamma 0.9 is 1 / (1 - gamma) = 10.
    assert abs(offsets[src_t == 0].mean() - 10.0) < 0.5


def test_ring_buffer_keeps_newest_steps_in_order_and_windows_are_contiguous():
    buf = init_buffer(capacity=10, num_envs=3, state_size=1, action_size=1)
    for chunk in range(4):  # 4 chunks of 4 steps into capacity 10: the oldest 6 steps are gone
        t = np.arange(chunk * 4, chunk * 4 + 4, dtype=np.float32)
        steps = {
            "state": jnp.asarray(np.broadcast_to(t[:, None, None], (4, 3, 1))),
            "action": jnp.zeros((4, 3, 1)),
            "episode_id": jnp.asarray(np.broadcast_to((t // 5).astype(np.int32)[:, None], (4, 3))),
        }
        buf = insert(buf, steps)
    assert int(buf.size) == 10
    segs = sample_segments(buf, jax.random.PRNGKey(0), num_segments=200, length=4)
    starts = np.asarray(segs["state"][:, 0, 0])
    assert starts.min() == 6 and starts.max() == 12  # windows lie inside the newest 10 steps
    np.testing.assert_array_equal(np.diff(np.asarray(segs["state"][..., 0]), axis=1), 1.0)


def test_minibatches_pair_each_state_with_a_later_step_of_its_own_episode():
    """What the trainer gets: every goal is a strictly later step (k >= 1) of the same episode, in-segment."""
    rng = np.random.default_rng(3)
    num, length = 10, 30
    runs = np.cumsum(rng.random((num, length)) < 0.15, axis=1)  # several episodes per segment
    ids = runs + 100 * np.arange(num)[:, None]  # an episode id names its segment too
    mbs = relabeled_minibatches(
        jax.random.PRNGKey(0), _segments(ids), (0, 1), 0.9, num_minibatches=4, batch_size=16
    )
    assert (
        mbs["state"].shape == (4, 16, 3)
        and mbs["goal"].shape == (4, 16, 2)
        and mbs["action"].shape == (4, 16, 1)
        and mbs["offset"].shape == (4, 16)
    )
    state, goal = np.asarray(mbs["state"]).reshape(-1, 3), np.asarray(mbs["goal"]).reshape(-1, 2)
    offset = np.asarray(mbs["offset"]).reshape(-1)
    np.testing.assert_array_equal(goal[:, 0], state[:, 0])  # same episode (so the same segment)
    assert np.all(goal[:, 1] > state[:, 1]) and np.all(goal[:, 1] < length)  # later, within the segment
    np.testing.assert_array_equal(goal[:, 1] - state[:, 1], offset)  # k is the offset reported
    assert len({tuple(r) for r in state[:, :2]}) == len(state)  # 64 distinct transitions, no repeats
