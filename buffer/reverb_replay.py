"""Reverb replay service of the distributed mode: server, tables, segment writer and sampler.

Data contract with the collector and the learners: a *segment batch* is a dict of numpy arrays with a
leading env axis N and a time axis L (the collector's unroll length):

    state       float32 [N, L, state_size]
    action      float32 [N, L, action_size]
    episode_id  int32   [N, L]   per-env episode counter; relabeling never crosses ids

One Reverb item is one env's segment of L steps. It is stored as a single cell (the whole [L, ...]
slices of that env) in a chunk of its own, so that one item == one chunk: a sample transfers exactly the
bytes of one segment, and FIFO eviction frees whole chunks. Every table (one per learner) gets an item that
references the *same* chunk, so the data is sent and stored once whatever the number of learners.

A learner samples `batch_size` items and receives the same dict with a leading axis [B, L, ...].

Only this package imports Reverb (and with it TensorFlow); nothing else in the project needs TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import reverb
import tensorflow as tf
from reverb import pybind as reverb_pybind

# Field order of the flattened item columns. dm-tree flattens dicts in sorted key order, so the writer's
# `create_item(trajectory=dict)` lays the columns out in this order; the sampler relies on it.
FIELDS: tuple[str, ...] = ("action", "episode_id", "state")
_DTYPES: dict[str, np.dtype] = {
    "action": np.dtype(np.float32),
    "episode_id": np.dtype(np.int32),
    "state": np.dtype(np.float32),
}
# Leading entries of a pybind sampler row before the data columns: key, probability, table_size,
# priority, times_sampled.
_NUM_INFO = 5


# --------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------


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
) -> ReplaySpec:
    """Convenience: a spec whose tables all share one rate-limiter setting."""
    return ReplaySpec(
        tables=tuple(TableSpec(n, samples_per_insert, error_buffer) for n in table_names),
        capacity_steps=capacity_steps,
        segment_length=segment_length,
        state_size=state_size,
        action_size=action_size,
        min_size_steps=min_size_steps,
    )


def _rate_limiter(spec: ReplaySpec, table: TableSpec) -> reverb.rate_limiters.RateLimiter:
    min_size = spec.min_size_items
    spi = table.samples_per_insert
    if spi is None:
        return reverb.rate_limiters.MinSize(min_size)
    error_buffer = table.error_buffer
    if error_buffer is None:
        error_buffer = max(0.1 * spi * min_size, 2.0 * max(1.0, spi))
    return reverb.rate_limiters.SampleToInsertRatio(
        samples_per_insert=spi, min_size_to_sample=min_size, error_buffer=error_buffer
    )


def _signature(spec: ReplaySpec) -> dict[str, tf.TensorSpec]:
    shapes = spec.item_shapes()
    return {k: tf.TensorSpec(shapes[k], tf.as_dtype(_DTYPES[k]), name=k) for k in FIELDS}


def make_tables(spec: ReplaySpec) -> list[reverb.Table]:
    """Uniform sampling, FIFO eviction, unlimited re-sampling, a signature so writers validate items."""
    return [
        reverb.Table(
            name=t.name,
            sampler=reverb.selectors.Uniform(),
            remover=reverb.selectors.Fifo(),
            max_size=spec.capacity_items,
            rate_limiter=_rate_limiter(spec, t),
            max_times_sampled=0,
            signature=_signature(spec),
        )
        for t in spec.tables
    ]


# --------------------------------------------------------------------------------------------------------
# Server, info, checkpoints
# --------------------------------------------------------------------------------------------------------


def start_server(
    spec: ReplaySpec,
    port: int | None = None,
    checkpoint_dir: str | None = None,
    host: str = "localhost",
) -> tuple[reverb.Server, str]:
    """Start a Reverb server in this process; returns it and the address clients connect to.

    With `checkpoint_dir`, checkpoints go there and a server started again from the same directory
    restores the latest one (tables, items, rate-limiter counters). The server listens on all interfaces;
    `host` only shapes the returned address (give the node's IP when learners run on other machines).
    """
    checkpointer = None
    if checkpoint_dir is not None:
        checkpointer = reverb.checkpointers.DefaultCheckpointer(path=str(checkpoint_dir))
    server = reverb.Server(tables=make_tables(spec), port=port, checkpointer=checkpointer)
    return server, f"{host}:{server.port}"


def table_info(address: str, timeout_s: int | None = None) -> dict[str, dict[str, Any]]:
    """Per-table counters from the server, in items (segments).

    num_inserts / num_samples are the rate limiter's completed calls since the table was created (they
    survive checkpoint restore); they include evicted items and samples a sampler prefetched.
    """
    infos = reverb.Client(address).server_info(timeout=timeout_s)
    out: dict[str, dict[str, Any]] = {}
    for name, info in infos.items():
        rl = info.rate_limiter_info
        out[name] = {
            "size": int(info.current_size),
            "max_size": int(info.max_size),
            "num_inserts": int(rl.insert_stats.completed),
            "num_samples": int(rl.sample_stats.completed),
            "num_unique_samples": int(info.num_unique_samples),
            "num_episodes": int(info.num_episodes),
            "num_deleted_episodes": int(info.num_deleted_episodes),
            "samples_per_insert": float(rl.samples_per_insert),
            "min_size_to_sample": int(rl.min_size_to_sample),
            "min_diff": float(rl.min_diff),
            "max_diff": float(rl.max_diff),
        }
    return out


def checkpoint(address: str) -> str:
    """Ask the server to write a checkpoint now; returns its path.

    Goes to the server's `checkpoint_dir` (or a temp dir when it was started without one). Blocks the
    tables while writing, so call it rarely (e.g. next to the learners' own checkpoints).
    """
    return reverb.Client(address).checkpoint()


def _connect(address: str, spec: ReplaySpec, tables: Sequence[str], timeout_s: float) -> reverb.Client:
    """Reach the server (bounded wait) and check it has `tables` with items shaped as `spec` says.

    Without this, a Reverb writer or sampler pointed at a dead address blocks forever in its constructor.
    """
    client = reverb.Client(address)
    try:
        infos = client.server_info(timeout=max(1, math.ceil(timeout_s)))
    except reverb.DeadlineExceededError as e:
        raise ConnectionError(f"no Reverb server answered at {address} within {timeout_s} s") from e
    want = spec.item_shapes()
    for table in tables:
        if table not in infos:
            raise KeyError(f"server at {address} has no table {table!r} (has {sorted(infos)})")
        sig = infos[table].signature
        if sig is not None:
            got = {k: tuple(v.shape) for k, v in sig.items()}
            if got != want:
                raise ValueError(f"table {table!r} holds items {got}, spec expects {want}")
    return client


# --------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------


def _check_batch(spec: ReplaySpec, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate shapes against the spec and make every field C-contiguous with the contract dtype."""
    missing = set(FIELDS) - set(batch)
    if missing:
        raise KeyError(f"segment batch lacks fields {sorted(missing)}")
    out = {k: np.ascontiguousarray(batch[k], dtype=_DTYPES[k]) for k in FIELDS}
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
        self._client = _connect(address, spec, self.tables, connect_timeout_s)
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


class WriterThreadError(RuntimeError):
    """The background writer thread failed; the original exception is the __cause__."""


class WriterAbandoned(RuntimeError):
    """``put`` on an AsyncSegmentWriter that was abandoned (its server went away)."""


_STOP = object()


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
                self.steps_written += self.writer.write(batch)
                self.batches_written += 1
        except BaseException as e:  # handed over to the caller's thread
            self._error = e

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise WriterThreadError(f"background segment writer failed: {self._error!r}") from self._error

    def put(self, batch: Mapping[str, np.ndarray]) -> None:
        """Queue one segment batch; blocks only while the queue is full."""
        if self._closed:
            raise RuntimeError("AsyncSegmentWriter is closed")
        self._raise_if_failed()
        self.puts += 1
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


# --------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------


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
        _connect(address, spec, [table], connect_timeout_s)
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
        data = {k: np.stack(cols[_NUM_INFO + j]) for j, k in enumerate(FIELDS)}
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
