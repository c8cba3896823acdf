"""The learner's side of a replay, the same for every backend: batches prefetched by a daemon thread.

A backend's sampler (``reverb_sampler.SegmentSampler``, ``ray_client.SegmentSampler``) subclasses
``PrefetchingSampler`` and writes its ``_run``: fetch batches from its server and hand each to ``_put``
(an exception as ``_Failure``), until ``_stop`` is set. What the learner calls (``sample``, ``close``, the
counters) lives here once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np


class SampledBatch(NamedTuple):
    """data: the segment-batch dict with leading [B, L, ...]; info: per-item sample info [B] (key,
    probability, table_size, times_sampled, as Reverb's)."""

    data: dict[str, np.ndarray]
    info: dict[str, np.ndarray]


class _Failure(NamedTuple):
    error: BaseException


class PrefetchingSampler:
    """Up to ``prefetch_batches`` batches of ``batch_size`` segments from ``table``, ready for ``sample``."""

    JOIN_S = 1.0  # how long ``close`` waits for the thread (it may be parked in a server call)

    def __init__(self, table: str, batch_size: int, prefetch_batches: int, thread_name: str) -> None:
        if batch_size < 1 or prefetch_batches < 1:
            raise ValueError("batch_size and prefetch_batches must be >= 1")
        self.table, self.batch_size = table, batch_size
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=prefetch_batches)
        self._stop = threading.Event()
        self._closed = False
        self.items_sampled = 0  # delivered to the caller
        self.batches_sampled = 0
        self.wait_s = 0.0  # caller time spent waiting for a batch
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def _put(self, item: Any) -> None:
        """Hand a batch (or a ``_Failure``) to the caller's side; gives up once stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def sample(self, timeout_s: float | None = None) -> SampledBatch:
        """Next batch; waits while the table is below min size or its rate limiter says no.

        Raises TimeoutError if none arrives within ``timeout_s`` (None: wait forever), RuntimeError
        (from the thread's error) if fetching failed.
        """
        if self._closed:
            raise RuntimeError("SegmentSampler is closed")
        start = time.perf_counter()
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no batch from table {self.table!r} within {timeout_s} s") from None
        finally:
            self.wait_s += time.perf_counter() - start
        if isinstance(item, _Failure):
            self._closed = True
            raise RuntimeError(f"sampler thread for table {self.table!r} failed") from item.error
        self.items_sampled += self.batch_size
        self.batches_sampled += 1
        return item

    def __iter__(self) -> Iterator[SampledBatch]:
        return self

    def __next__(self) -> SampledBatch:
        return self.sample()

    def close(self) -> None:
        """Stop prefetching and free the batches held."""
        self._closed = True
        self._stop.set()
        while True:  # free prefetched batches and unblock a pending put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=self.JOIN_S)

    def __enter__(self) -> PrefetchingSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
