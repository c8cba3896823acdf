"""The collector's cut of its rollouts into the replay's segments (pure numpy, no I/O)."""

from __future__ import annotations

import numpy as np


class SegmentAssembler:
    """Cuts time-major unrolls [U, N, ...] into batch-major segments [N, L, ...] of fixed length L."""

    def __init__(self, segment_length: int):
        self.length = segment_length
        self._chunks: list[dict[str, np.ndarray]] = []
        self._held = 0

    def add(self, steps: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        self._chunks.append(steps)
        self._held += steps["episode_id"].shape[0]
        out = []
        while self._held >= self.length:
            joined = {k: np.concatenate([c[k] for c in self._chunks]) for k in steps}
            out.append(
                {k: np.ascontiguousarray(np.swapaxes(v[: self.length], 0, 1)) for k, v in joined.items()}
            )
            rest = {k: v[self.length :] for k, v in joined.items()}
            self._held -= self.length
            self._chunks = [rest] if self._held else []
        return out
