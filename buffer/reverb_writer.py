"""The collector's side of the Reverb replay: segment batches in, one item per env segment in every table.

`SegmentWriter` writes synchronously; `AsyncSegmentWriter` (buffer/async_writer.py, any backend) puts
it on a background thread so the acting loop never waits on the network. The data contract is in
`reverb_replay.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from deepcrl.buffer.async_writer import AsyncSegmentWriter, SegmentSink, WriterAbandoned, WriterThreadError
from deepcrl.buffer.replay_spec import check_batch
from deepcrl.buffer.reverb_replay import FIELDS, ReplaySpec, connect


class SegmentWriter:
    """Writes segment batches: one item per env segment, created in every table from one shared chunk.

    Each env's [L, ...] slices are appended as a single step of a `TrajectoryWriter` whose columns use
    chunks of length 1, then one `create_item` per table references that same cell (no copies). At most
    `max_in_flight_items` items wait unconfirmed, so a slow or rate-limited server throttles the writer
    instead of growing memory on either side.
    """

    def __init__(
        self,
        address: str,
        spec: ReplaySpec,
        tables: Sequence[str] | None = None,
        max_in_flight_items: int = 256,
        priority: float = 1.0,
        connect_timeout_s: float = 60.0,
    ) -> None:
        self.spec = spec
        self.tables = tuple(tables) if tables is not None else spec.table_names
        for t in self.tables:
            spec.table(t)
        self.max_in_flight_items = max_in_flight_items
        self._priority = priority
        self._client = connect(address, spec, self.tables, connect_timeout_s)
        self._writer = self._client.trajectory_writer(num_keep_alive_refs=1)
        for k in FIELDS:
            self._writer.configure((k,), num_keep_alive_refs=1, max_chunk_length=1)
        self._closed = False
        self.steps_written = 0
        self.segments_written = 0  # env segments; each is one item in every table
        self.batches_written = 0

    @property
    def items_created(self) -> int:
        return self.segments_written * len(self.tables)

    def set_tables(self, tables: Sequence[str]) -> None:
        """Write the next segments to these tables (of the spec): a learner joined or left."""
        for t in tables:
            self.spec.table(t)
        self.tables = tuple(tables)

    def write(self, batch: Mapping[str, np.ndarray]) -> int:
        """Write one segment batch [N, L, ...]; returns the number of steps written (N * L)."""
        if self._closed:
            raise RuntimeError("SegmentWriter is closed")
        data = check_batch(self.spec, batch)
        n = data["state"].shape[0]
        w = self._writer
        for i in range(n):
            w.append({k: data[k][i] for k in FIELDS})
            history = w.history  # rebuilt on every access: take it once
            trajectory = {k: history[k][-1] for k in FIELDS}
            for table in self.tables:
                w.create_item(table, self._priority, trajectory)
            w.flush(block_until_num_items=self.max_in_flight_items)
            self.segments_written += 1
            self.steps_written += self.spec.segment_length
        self.batches_written += 1
        return n * self.spec.segment_length

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until the server has confirmed every item written so far.

        Raises reverb.DeadlineExceededError after `timeout_s` (items keep going in the background).
        """
        timeout_ms = None if timeout_s is None else int(timeout_s * 1000)
        self._writer.flush(block_until_num_items=0, timeout_ms=timeout_ms)

    def close(self, timeout_s: float | None = None) -> None:
        """Flush and release the stream; idempotent."""
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            self._closed = True
            self._writer.close()

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The writer thread is backend-agnostic (buffer/async_writer.py); kept importable from here.
__all__ = ["SegmentWriter", "AsyncSegmentWriter", "SegmentSink", "WriterAbandoned", "WriterThreadError"]
