"""The collector's segment assembly: time-major unrolls in, batch-major segments of consecutive steps out."""

from __future__ import annotations

import numpy as np
import pytest

from deepcrl.collector.segments import SegmentAssembler

pytestmark = pytest.mark.core


def _unroll(first_t: int, length: int, num_envs: int) -> dict[str, np.ndarray]:
    """Steps [U, N, ...] whose values name their env and their step: state = (env, t), episode_id = env."""
    t = np.arange(first_t, first_t + length)[:, None].repeat(num_envs, 1)
    env = np.arange(num_envs)[None, :].repeat(length, 0)
    return {
        "state": np.stack([env, t], axis=-1).astype(np.float32),
        "action": (1000 * env + t)[..., None].astype(np.float32),
        "episode_id": env.astype(np.int32),
    }


@pytest.mark.parametrize("unroll, seg_len", [(7, 5), (5, 5), (3, 8), (12, 4)])
def test_segments_hold_consecutive_steps_of_one_env_each(unroll, seg_len):
    num_envs, chunks = 3, 6
    assembler = SegmentAssembler(seg_len)
    segments = []
    for c in range(chunks):
        segments += assembler.add(_unroll(c * unroll, unroll, num_envs))
    assert len(segments) == (chunks * unroll) // seg_len  # the rest is held for the next unroll
    for i, seg in enumerate(segments):
        assert seg["state"].shape == (num_envs, seg_len, 2) and seg["action"].shape == (num_envs, seg_len, 1)
        assert seg["state"].flags["C_CONTIGUOUS"]
        for n in range(num_envs):
            # Row n is env n only (not transposed, not mixed), at steps i*L ... i*L + L-1 in order.
            np.testing.assert_array_equal(seg["state"][n, :, 0], n)
            np.testing.assert_array_equal(seg["state"][n, :, 1], np.arange(i * seg_len, (i + 1) * seg_len))
            np.testing.assert_array_equal(seg["action"][n, :, 0], 1000 * n + seg["state"][n, :, 1])
            np.testing.assert_array_equal(seg["episode_id"][n], n)
