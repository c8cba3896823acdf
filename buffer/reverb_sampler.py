"""The learner's side of the Reverb replay: batches of segments from one table, prefetched.

`SegmentSampler` is what learners use; the two functions at the end are the alternatives it was measured
against (benchmarks/reverb_throughput.py). The data contract is in `reverb_replay.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import reverb
from reverb import pybind as reverb_pybind

from deepcrl.buffer.prefetch import PrefetchingSampler, SampledBatch, _Failure
from deepcrl.buffer.reverb_replay import FIELDS, NUM_INFO, ReplaySpec, connect


class SegmentSampler(PrefetchingSampler):
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
        super().__init__(table, batch_size, prefetch_batches, f"reverb-sampler-{table}")
        self.spec = spec
        connect(address, spec, [table], connect_timeout_s)
        in_flight = max_in_flight_samples or batch_size
        self._sampler = reverb_pybind.Client(address).NewSampler(table, -1, in_flight)
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
                self._put(self._next_batch())
        except BaseException as e:  # handed over to the caller's thread
            self._put(_Failure(e))


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
