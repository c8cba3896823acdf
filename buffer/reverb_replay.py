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

This module holds the contract (specs, tables), the server, its counters and drain; the collector's side is
`reverb_writer.py` and the learner's side `reverb_sampler.py`. Only this package imports Reverb (and
with it TensorFlow); nothing else in the project needs TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import reverb
import tensorflow as tf
from reverb import pybind as reverb_pybind

# Field order of the flattened item columns. dm-tree flattens dicts in sorted key order, so the writer's
# `create_item(trajectory=dict)` lays the columns out in this order; the sampler relies on it.
FIELDS: tuple[str, ...] = ("action", "episode_id", "state")
DTYPES: dict[str, np.dtype] = {
    "action": np.dtype(np.float32),
    "episode_id": np.dtype(np.int32),
    "state": np.dtype(np.float32),
}
# Leading entries of a pybind sampler row before the data columns: key, probability, table_size,
# priority, times_sampled.
NUM_INFO = 5


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
    return {k: tf.TensorSpec(shapes[k], tf.as_dtype(DTYPES[k]), name=k) for k in FIELDS}


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


def drain_sampler(address: str, table: str) -> Callable[[], object]:
    """A call that takes one item from `table` and drops it, blocking while the table's rate limiter holds
    it back: the replay role drains the table of a learner that is down, so the collector is never stalled.
    """
    return reverb_pybind.Client(address).NewSampler(table, -1, 8).GetNextTrajectory


def connect(address: str, spec: ReplaySpec, tables: Sequence[str], timeout_s: float) -> reverb.Client:
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
