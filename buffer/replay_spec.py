"""What both sides of the replay agree on, in plain data: tables, rate limits, sizes.

Kept apart from ``reverb_replay.py`` so that a config can be resolved into a ``ReplaySpec``
(``configs/experiment.py``) without importing Reverb or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

# The fields of a segment batch, in the order Reverb flattens its item columns (dm-tree sorts dict keys),
# and their dtypes: the data contract of every replay backend (``reverb_replay``, ``ray_replay``).
FIELDS: tuple[str, ...] = ("action", "episode_id", "state")
DTYPES: dict[str, np.dtype] = {
    "action": np.dtype(np.float32),
    "episode_id": np.dtype(np.int32),
    "state": np.dtype(np.float32),
}


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One table (one per learner) and its rate limiter.

    samples_per_insert: None -> no ratio is enforced (Reverb `MinSize`: sampling only waits for
      `min_size_steps`). A float -> Reverb `SampleToInsertRatio`, counted in *segments*: how many sampled
      segments (items) per inserted segment. E.g. a learner drawing 800 batches of 256 segments per
      collector write of 512 segments wants 800 * 256 / 512 = 400.
    error_buffer: allowed deviation from the ratio, in samples (Reverb's unit). None -> the Acme-style
      default max(0.1 * spi * min_size_items, 2 * max(1, spi)). Set it to at least spi * N (the segments of
      one collector write) so a whole segment batch can land without stalling halfway.
    """

    name: str
    samples_per_insert: float | None = None
    error_buffer: float | None = None


@dataclasses.dataclass(frozen=True)
class ReplaySpec:
    """Everything both sides of the replay must agree on; sizes are given in env *steps*.

    capacity_steps: steps each table holds; the table's item capacity is capacity_steps // segment_length.
      Tables share chunks and all evict FIFO, so the server holds about capacity_steps steps in total
      (not per table).
    min_size_steps: sampling from a table waits until it holds this many steps (rounded up to segments).
    """

    tables: tuple[TableSpec, ...]
    capacity_steps: int
    segment_length: int
    state_size: int
    action_size: int
    min_size_steps: int = 1
    backend: str = "reverb"  # which replay backend serves these tables (buffer/replay_backend.py)

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError("ReplaySpec needs at least one table")
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate table names: {names}")
        if self.segment_length < 1 or self.state_size < 1 or self.action_size < 1:
            raise ValueError("segment_length, state_size and action_size must be positive")
        if self.capacity_steps < self.segment_length:
            raise ValueError(
                f"capacity_steps ({self.capacity_steps}) must hold at least one segment "
                f"({self.segment_length} steps)"
            )
        if self.min_size_items > self.capacity_items:
            raise ValueError("min_size_steps exceeds capacity_steps: sampling would never start")

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    @property
    def capacity_items(self) -> int:
        return self.capacity_steps // self.segment_length

    @property
    def min_size_items(self) -> int:
        return max(1, math.ceil(self.min_size_steps / self.segment_length))

    def item_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one item (one env's segment) per field."""
        L = self.segment_length
        return {"action": (L, self.action_size), "episode_id": (L,), "state": (L, self.state_size)}

    def bytes_per_step(self) -> int:
        return 4 * (self.state_size + self.action_size + 1)

    def table(self, name: str) -> TableSpec:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"no table {name!r} in spec (tables: {self.table_names})")


def make_spec(
    table_names: Sequence[str],
    *,
    capacity_steps: int,
    segment_length: int,
    state_size: int,
    action_size: int,
    min_size_steps: int = 1,
    samples_per_insert: float | None = None,
    error_buffer: float | None = None,
    backend: str = "reverb",
) -> ReplaySpec:
    """Convenience: a spec whose tables all share one rate-limiter setting."""
    return ReplaySpec(
        tables=tuple(TableSpec(n, samples_per_insert, error_buffer) for n in table_names),
        capacity_steps=capacity_steps,
        segment_length=segment_length,
        state_size=state_size,
        action_size=action_size,
        min_size_steps=min_size_steps,
        backend=backend,
    )


def check_batch(spec: ReplaySpec, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A segment batch [N, L, ...] checked against the spec, each field C-contiguous in its contract dtype
    (copied only where it is not already): what a writer sends, whatever the backend."""
    missing = set(FIELDS) - set(batch)
    if missing:
        raise KeyError(f"segment batch lacks fields {sorted(missing)}")
    out = {k: np.ascontiguousarray(batch[k], dtype=DTYPES[k]) for k in FIELDS}
    n = out["state"].shape[0]
    shapes = spec.item_shapes()
    for k in FIELDS:
        if out[k].shape != (n, *shapes[k]):
            raise ValueError(f"field {k!r} has shape {out[k].shape}, expected {(n, *shapes[k])} [N, L, ...]")
    return out
