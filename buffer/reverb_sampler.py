"""The learner's side of the Reverb replay: batches of segments from one table, prefetched.

`SegmentSampler` is what learners use; the two functions at the end are the alternatives it was measured
against (benchmarks/reverb_throughput.py). The data contract is in `reverb_replay.py`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import reverb
from reverb import pybind as reverb_pybind

from deepcrl.buffer.reverb_replay import FIELDS, NUM_INFO, ReplaySpec, connect


class SampledBatch(NamedTuple):
    """data: the segment-batch dict with leading [B, L, ...]; info: per-item Reverb sample info [B]."""

    data: dict[str, np.ndarray]
    info: dict[str, np.ndarray]


class _Failure(NamedTuple):
    error: BaseException


class SegmentSampler:
    """Yields numpy batches of `batch_size` segments from one table.

    Uses one long-lived Reverb sampler stream (the C++ `Sampler` behind `reverb.Client.sample`, kept open
    instead of reopened per call) with `max_in_flight_samples` requests outstanding, fed by a daemon thread
    that prefetches up to `prefetch_batches` stacked batches, so network and decompression overlap the
    learner's compute. Measured against `Client.sample` (one stream per call: 1.4-5x slower) and
    `TrajectoryDataset` (same speed, but drags tf.data into the learner); see docs/benchmarks.md.

    Items the thread has prefetched count as sampled for the table's rate limiter. The Reverb sampling
    call cannot be interrupted, so after `close()` a thread blocked on an empty or rate-limited table stays
    parked (daemon, holds no batch) until data arrives or the process exits.
    """

    def __init__(
        self,
        address: str,
        table: str,
        batch_size: int,
        spec: ReplaySpec,
        max_in_flight_samples: int | None = None,
        prefetch_batches: int = 2,
        connect_timeout_s: float = 60.0,
    ) -> None:
        spec.table(table)
        if batch_size < 1 or prefetch_batches < 1:
            raise ValueError("batch_size and prefetch_batches must be >= 1")
        self.spec = spec
        self.table = table
        self.batch_size = batch_size
        connect(address, spec, [table], connect_timeout_s)
        in_flight = max_in_flight_samples or batch_size
        self._sampler = reverb_pybind.Client(address).NewSampler(table, -1, in_flight)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=prefetch_batches)
        self._stop = threading.Event()
        self._closed = False
        self.items_sampled = 0  # delivered to the caller
        self.batches_sampled = 0
        self.wait_s = 0.0  # caller time spent waiting for a batch
        self._thread = threading.Thread(target=self._run, name=f"reverb-sampler-{table}", daemon=True)
        self._thread.start()

    def _next_batch(self) -> SampledBatch:
        rows = [self._sampler.GetNextTrajectory() for _ in range(self.batch_size)]
        cols = list(zip(*rows, strict=True))
        info = {
            "key": np.asarray(cols[0], dtype=np.uint64),
            "probability": np.asarray(cols[1], dtype=np.float64),
            "table_size": np.asarray(cols[2], dtype=np.int64),
            "times_sampled": np.asarray(cols[4], dtype=np.int32),
        }
        data = {k: np.stack(cols[NUM_INFO + j]) for j, k in enumerate(FIELDS)}
        return SampledBatch(data, info)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._next_batch()
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed over to the caller's thread
            while not self._stop.is_set():
                try:
                    self._queue.put(_Failure(e), timeout=0.1)
                    return
                except queue.Full:
                    continue

    def sample(self, timeout_s: float | None = None) -> SampledBatch:
        """Next batch; waits while the table is below min size or its rate limiter says no.

        Raises TimeoutError if none arrives within `timeout_s` (None: wait forever).
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
        """Stop prefetching (see the class note on a thread parked in Reverb)."""
        self._closed = True
        self._stop.set()
        while True:  # free prefetched batches and unblock a pending put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=1.0)

    def __enter__(self) -> SegmentSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------------
# Alternatives SegmentSampler was measured against (benchmarks/reverb_throughput.py); not for training.
# --------------------------------------------------------------------------------------------------------


def sample_batch_per_call(address: str, table: str, batch_size: int) -> dict[str, np.ndarray]:
    """One batch through `reverb.Client.sample`, which opens a new sampler stream for every call."""
    client = reverb.Client(address)
    samples = list(client.sample(table, num_samples=batch_size, emit_timesteps=False))
    cols = list(zip(*(s.data for s in samples), strict=True))
    return {k: np.stack(cols[j]) for j, k in enumerate(FIELDS)}


def dataset_batches(
    address: str, table: str, batch_size: int, max_in_flight_samples: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Batches through `reverb.TrajectoryDataset` (tf.data), converted to numpy."""
    ds = reverb.TrajectoryDataset.from_table_signature(
        server_address=address,
        table=table,
        max_in_flight_samples_per_worker=max_in_flight_samples or batch_size,
    )
    for sample in ds.batch(batch_size, drop_remainder=True).prefetch(2):
        yield {k: v.numpy() for k, v in sample.data.items()}
