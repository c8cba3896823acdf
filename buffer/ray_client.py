"""The collector's and the learners' side of the Ray replay (``ray_replay.py``): segment batches in and out.

The same classes, signatures and meanings as ``reverb_writer.SegmentWriter`` and
``reverb_sampler.SegmentSampler``. A batch goes into Ray's object store once (``ray.put``: one copy)
and the store actor, on the same node, reads it from there without another; a sampled batch comes back
the same way, each segment gathered once by the store. Every call to the store waits at most
``replay_store.WAIT_S`` and is repeated. A client whose store died behaves as Reverb's do while their
server is down: the writer parks (its ``write`` blocks until it is closed, ``store_gone`` says why) and
the sampler hands out nothing (``sample`` times out), so a role waits, is watched as waiting, and moves
to the store started again when the driver tells it the new address (a new writer or sampler).
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np
import ray

from deepcrl.buffer.prefetch import PrefetchingSampler, SampledBatch, _Failure
from deepcrl.buffer.ray_replay import StoreGone, connect, get
from deepcrl.buffer.replay_spec import ReplaySpec, check_batch
from deepcrl.buffer.replay_store import WAIT_S


class SegmentWriter:
    """Writes segment batches: one item per env segment in every table, the segment stored once.

    ``write`` hands the batch to the store, which queues it and inserts it as the tables' limiters admit
    (as a Reverb server does with items in flight), and returns; it waits only while more than
    ``max_in_flight_items`` items (segments × tables) of older batches are not in yet, so a
    rate-limited table throttles the writer. The store inserts a writer's batches in the order written.
    ``priority`` is accepted for the Reverb signature; sampling is uniform.
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
        self._actor = connect(address, spec, self.tables, connect_timeout_s)
        self._id = uuid.uuid4().hex
        self._sent: deque[tuple[int, int, ray.ObjectRef]] = deque()  # (batch number, segments, its call)
        self._in = 0  # batches the store has in whole
        self._closed = False
        self.steps_written = 0
        self.segments_written = 0  # env segments; each is one item in every table
        self.batches_written = 0
        self.store_gone = False

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
        n, seq = data["state"].shape[0], self.batches_written
        self._sent.append((seq, n, self._actor.insert.remote(data, self.tables, self._id, seq)))
        self.segments_written += n
        self.steps_written += n * self.spec.segment_length
        self.batches_written += 1
        while (sum(k for _, k, _ in self._sent) - n) * len(self.tables) > self.max_in_flight_items:
            try:
                self._wait_for(self._sent[0][0], math.inf)
            except StoreGone:
                self._park()
        return n * self.spec.segment_length

    def _park(self) -> None:
        """The store died: block until closed, as a Reverb writer blocks on a server that is down (its
        role is told the new address and abandons this writer)."""
        self.store_gone = True
        while not self._closed:
            time.sleep(WAIT_S)
        raise RuntimeError("SegmentWriter is closed (its replay store had died)")

    def _wait_for(self, seq: int, deadline: float) -> None:
        """Wait until the store has batches up to ``seq`` in whole (TimeoutError past ``deadline``)."""
        left = lambda: None if deadline == math.inf else max(0.0, deadline - time.monotonic())  # noqa: E731
        for done, n, call in itertools.takewhile(lambda sent: sent[0] <= seq, list(self._sent)):
            if get(call, left()) == n:  # the call returns at once (its error, a dead store, surfaces here)
                self._in = max(self._in, done + 1)  # that batch is in whole, and every one before it
        while self._in <= seq:
            wait = WAIT_S if deadline == math.inf else min(WAIT_S, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"the replay store has not taken batch {seq} in the time given")
            self._in = get(self._actor.wait_written.remote(self._id, seq, wait))
        while self._sent and self._sent[0][0] < self._in:
            self._sent.popleft()

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until the store has every batch written so far; TimeoutError after ``timeout_s`` (the
        batches stay queued there and go in later)."""
        if self._sent:
            self._wait_for(self._sent[-1][0], math.inf if timeout_s is None else time.monotonic() + timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Flush and let go; idempotent. What the store still holds queued after ``timeout_s`` is dropped."""
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        except TimeoutError:
            get(self._actor.forget.remote(self._id), WAIT_S)
            raise
        finally:
            self._closed = True
            self._sent.clear()

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take(parts: list[tuple[dict, dict]], b: int) -> tuple[SampledBatch, list[tuple[dict, dict]]]:
    """The first ``b`` items of ``parts`` as one batch, and the rest (one answer of exactly ``b``: as is)."""
    if len(parts) == 1 and len(parts[0][1]["key"]) == b:
        return SampledBatch(*parts[0]), []
    joined = [{k: np.concatenate([p[i][k] for p in parts]) for k in parts[0][i]} for i in (0, 1)]
    batch = SampledBatch(*({k: v[:b] for k, v in d.items()} for d in joined))
    rest = tuple({k: v[b:] for k, v in d.items()} for d in joined)
    return batch, [rest] if len(rest[1]["key"]) else []


class SegmentSampler(PrefetchingSampler):
    """Yields numpy batches of ``batch_size`` segments from one table, prefetched by a daemon thread.

    The thread keeps ``ceil(max_in_flight_samples / batch_size)`` requests at the store (one by
    default: the next is asked for as soon as one arrives) and up to ``prefetch_batches`` batches
    ready. A request the limiter admits only in part comes back in part, as Reverb's sampler takes items
    one at a time, and the thread asks again for the rest. Items prefetched count as sampled for the
    limiter. The arrays of a batch are read-only (they live in the object store). Once the store died
    (``store_gone``) nothing more comes: ``sample`` times out, as Reverb's does while its server is down.
    """

    JOIN_S = WAIT_S + 1.0  # the thread ends within one store call

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
        super().__init__(table, batch_size, prefetch_batches, f"ray-sampler-{table}")
        self.spec = spec
        self._actor = connect(address, spec, [table], connect_timeout_s)
        self._depth = max(1, math.ceil((max_in_flight_samples or batch_size) / batch_size))
        self.store_gone = False
        self._thread.start()

    def _run(self) -> None:
        try:
            asks: deque[ray.ObjectRef] = deque()
            parts: list[tuple[dict, dict]] = []
            while not self._stop.is_set():
                while len(asks) < self._depth:
                    asks.append(self._actor.sample.remote(self.table, self.batch_size, WAIT_S))
                data, info = get(asks.popleft())
                asks.append(
                    self._actor.sample.remote(self.table, self.batch_size, WAIT_S)
                )  # while this one is handled
                if len(info["key"]):
                    parts.append((data, info))
                while parts and sum(len(p[1]["key"]) for p in parts) >= self.batch_size:
                    batch, parts = _take(parts, self.batch_size)
                    self._put(batch)
        except StoreGone:  # as Reverb's sampler while its server is down: nothing more comes (timeouts)
            self.store_gone = True
        except BaseException as e:  # handed over to the caller's thread
            self._put(_Failure(e))


