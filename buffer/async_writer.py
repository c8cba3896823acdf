"""The collector's writer thread, the same for every replay backend: segment batches are handed to a
background thread through a bounded queue, so the acting loop never waits on the network or on the
tables' rate limiters. The thread drives a backend's ``SegmentWriter`` (a ``SegmentSink``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np


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
        self._thread = threading.Thread(target=self._run, name="segment-writer", daemon=True)
        self._thread.start()

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
