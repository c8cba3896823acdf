"""The collector's side of the Reverb replay: segment batches in, one item per env segment in every table.

`SegmentWriter` writes synchronously; `AsyncSegmentWriter` puts it on a background thread so the acting
loop never waits on the network. The data contract is in `reverb_replay.py`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from deepcrl.buffer.reverb_replay import DTYPES, FIELDS, ReplaySpec, connect


def _check_batch(spec: ReplaySpec, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate shapes against the spec and make every field C-contiguous with the contract dtype."""
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
        data = _check_batch(self.spec, batch)
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


class SegmentSink(Protocol):
    """What AsyncSegmentWriter drives; SegmentWriter is one (tests inject fakes)."""

    def write(self, batch: Mapping[str, np.ndarray]) -> int: ...

    def flush(self, timeout_s: float | None = None) -> None: ...

    def close(self, timeout_s: float | None = None) -> None: ...

    def set_tables(self, tables: Sequence[str]) -> None: ...


class WriterThreadError(RuntimeError):
    """The background writer thread failed; the original exception is the __cause__."""


class WriterAbandoned(RuntimeError):
    """``put`` on an AsyncSegmentWriter that was abandoned (its server went away)."""


_STOP = object()


class _SetTables(NamedTuple):
    """A queue entry that switches the writer's tables between two batches, in order."""

    tables: tuple[str, ...]


class AsyncSegmentWriter:
    """Writes segment batches from a background thread so the acting loop never waits on the network.

    `put` hands a batch over through a bounded queue and returns at once unless the queue is full (the
    writer is behind: network, server or the tables' rate limiters); how often and how long it waited is
    counted. The batch's arrays must not be mutated after `put`. An exception in the thread is raised
    (as WriterThreadError) from the next `put` or from `close`.
    """

    def __init__(self, writer: SegmentSink, queue_size: int = 2) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.writer = writer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._closed = False
        self.puts = 0
        self.puts_blocked = 0
        self.put_blocked_s = 0.0
        self.batches_written = 0
        self.steps_written = 0
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reverb-segment-writer", daemon=True)
        self._thread.start()

    @classmethod
    def connect(
        cls, address: str, spec: ReplaySpec, queue_size: int = 2, **writer_kwargs: Any
    ) -> AsyncSegmentWriter:
        """An AsyncSegmentWriter around a new SegmentWriter, created here so a bad address fails now."""
        return cls(SegmentWriter(address, spec, **writer_kwargs), queue_size=queue_size)

    def _run(self) -> None:
        try:
            while True:
                batch = self._queue.get()
                if batch is _STOP:
                    self.writer.flush()
                    return
                if isinstance(batch, _SetTables):
                    self.writer.set_tables(batch.tables)
                    continue
                self.steps_written += self.writer.write(batch)
                self.batches_written += 1
        except BaseException as e:  # handed over to the caller's thread
            self._error = e

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise WriterThreadError(f"background segment writer failed: {self._error!r}") from self._error

    def set_tables(self, tables: Sequence[str]) -> None:
        """Batches put from now on go to ``tables``; those queued before still go where they were
        meant to (the switch travels through the queue)."""
        self._enqueue(_SetTables(tuple(tables)))

    def put(self, batch: Mapping[str, np.ndarray]) -> None:
        """Queue one segment batch; blocks only while the queue is full."""
        self.puts += 1
        self._enqueue(batch)

    def _enqueue(self, batch: Any) -> None:
        if self._closed:
            raise RuntimeError("AsyncSegmentWriter is closed")
        self._raise_if_failed()
        try:
            self._queue.put_nowait(batch)
            return
        except queue.Full:
            pass
        self.puts_blocked += 1
        start = time.perf_counter()
        try:
            while True:
                try:
                    self._queue.put(batch, timeout=0.1)
                    return
                except queue.Full:
                    self._raise_if_failed()
                    if self._abandoned.is_set():
                        raise WriterAbandoned("the segment writer was abandoned") from None
                    if not self._thread.is_alive():
                        raise RuntimeError("background segment writer exited") from None
        finally:
            self.put_blocked_s += time.perf_counter() - start

    def abandon(self) -> int:
        """Give up on this writer without waiting (its server is gone); returns the batches dropped.

        A thread parked inside Reverb stays parked (daemon); a ``put`` blocked on the full queue
        raises WriterAbandoned.
        """
        self._abandoned.set()
        self._closed = True
        dropped = 0
        while True:
            try:
                if self._queue.get_nowait() is not _STOP:
                    dropped += 1
            except queue.Empty:
                return dropped

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Batches queued but not yet taken by the thread."""
        return self._queue.qsize()

    def close(self, timeout_s: float | None = None) -> None:
        """Write everything queued, flush, close the writer; raises the thread's error if it had one."""
        if self._closed:
            return
        self._closed = True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError("AsyncSegmentWriter.close: queue did not drain in time") from None
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._thread.join(remaining)
        if self._thread.is_alive():
            raise TimeoutError("AsyncSegmentWriter.close: writer thread did not finish in time")
        try:
            self.writer.close()
        finally:
            self._raise_if_failed()

    def __enter__(self) -> AsyncSegmentWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
