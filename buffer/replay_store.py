"""The store of the Ray replay (``ray_replay.py``) in plain Python: segments, tables, rate limiters.

Every segment is stored once, in a global ring of ``capacity_items`` preallocated numpy slots per field,
and referenced by every table it goes to. Each table is a FIFO ring of item ids, sampled uniformly with
replacement (Reverb's ``Uniform``), and rate-limited by a port of Reverb's ``RateLimiter``
(``rate_limiter.cc``: the same counts and conditions). When the storage ring overwrites a slot, a table
still holding that item (then its oldest) drops it first. Waits are bounded, on one
``threading.Condition``: the actor runs calls on many threads, so a sampler held back by its limiter
never blocks an insert, and a caller that went away leaves no thread parked for more than ``WAIT_S``.
No Ray here: the tests drive ``Store`` directly; ``ray_replay`` makes it an actor.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepcrl.buffer.replay_spec import DTYPES, FIELDS, ReplaySpec, TableSpec
from deepcrl.rundir.checkpoints import _swap_in, check_manifest, write_json_atomic, write_manifest

WAIT_S = 1.0  # longest one call waits on a limiter; clients call again (and so notice a dead store)
CHECKPOINT = "store"  # CHECKPOINT_DIR/store: the latest checkpoint; store.old: the one before
STATE = "deepcrl_state.json"  # inside a checkpoint: what the replay role keeps with it (its drain counts)
TABLES = "tables.json"  # inside a checkpoint: next item id, sizes, each table's limiter and counts


class RateLimiter:
    """Reverb's ``RateLimiter`` in plain Python (counts in items): the same counters and the same
    ``CanInsert``/``CanSample`` conditions, so a table admits exactly what Reverb's would. Callers hold
    the condition's lock around every call, as Reverb's hold its mutex."""

    def __init__(self, samples_per_insert: float, min_size_to_sample: int, min_diff: float, max_diff: float):
        if min_size_to_sample < 1:
            raise ValueError(f"min_size_to_sample ({min_size_to_sample}) must be a positive integer")
        self.samples_per_insert, self.min_size_to_sample = float(samples_per_insert), int(min_size_to_sample)
        self.min_diff, self.max_diff = float(min_diff), float(max_diff)
        self.inserts = self.samples = self.deletes = 0
        self.cancelled = False

    @classmethod
    def for_table(cls, spec: ReplaySpec, table: TableSpec) -> RateLimiter:
        """Reverb's ``MinSize`` (no ratio) or ``SampleToInsertRatio``, as ``reverb_replay`` builds them."""
        min_size, spi = spec.min_size_items, table.samples_per_insert
        if spi is None:
            return cls(1.0, min_size, -sys.float_info.max, sys.float_info.max)
        eb = (
            table.error_buffer
            if table.error_buffer is not None
            else max(0.1 * spi * min_size, 2.0 * max(1.0, spi))
        )
        offset = spi * min_size  # the error counts only what happens after the table reached its min size
        if 2 * eb < 2 * max(1.0, spi):
            raise ValueError("The size of error_buffer must be >= 2 * max(1.0, samples_per_insert)")
        return cls(spi, min_size, offset - eb, offset + eb)

    def can_insert(self, num_inserts: int = 1) -> bool:
        if self.inserts + num_inserts - self.deletes <= self.min_size_to_sample:
            return True  # until the min size is reached inserts are free to progress
        return (num_inserts + self.inserts) * self.samples_per_insert - self.samples <= self.max_diff

    def can_sample(self, num_samples: int = 1) -> bool:
        if self.inserts - self.deletes < self.min_size_to_sample:
            return False
        return self.inserts * self.samples_per_insert - self.samples - num_samples >= self.min_diff

    def insert(self, n: int = 1, cv: threading.Condition | None = None) -> None:
        """Count ``n`` inserts done (``cv``: wake its waiters, as Reverb's ``Insert`` signals)."""
        self.inserts += n
        self._signal(cv)

    def delete(self, n: int = 1, cv: threading.Condition | None = None) -> None:
        self.deletes += n
        self._signal(cv)

    def reset(self, cv: threading.Condition | None = None) -> None:
        self.inserts = self.samples = self.deletes = 0
        self._signal(cv)

    @staticmethod
    def _signal(cv: threading.Condition | None) -> None:
        if cv is not None:
            cv.notify_all()

    def await_can_insert(self, cv: threading.Condition, timeout: float | None = None) -> None:
        """Block (``cv`` held) until one insert may go; TimeoutError after ``timeout`` s."""
        self._await(cv, self.can_insert, timeout)

    def await_and_finalize_sample(self, cv: threading.Condition, timeout: float | None = None) -> None:
        """Block (``cv`` held) until one sample may go, then count it; TimeoutError after ``timeout`` s."""
        self._await(cv, self.can_sample, timeout)
        self.samples += 1
        cv.notify_all()

    def cancel(self, cv: threading.Condition) -> None:
        """Wake every waiter with an error (the store is stopping)."""
        self.cancelled = True
        cv.notify_all()

    def _await(self, cv: threading.Condition, can: Callable[[], bool], timeout: float | None) -> None:
        if not cv.wait_for(lambda: self.cancelled or can(), timeout):
            raise TimeoutError("Rate Limiter: Timeout exceeded before the right to insert was acquired.")
        if self.cancelled:
            raise RuntimeError("RateLimiter has been cancelled")

    def admissible_inserts(self, n: int, drops: Callable[[int], int] = lambda done: 0) -> int:
        """How many of ``n`` inserts in a row ``can_insert`` lets through now, ``drops(done)`` being the
        deletes the first ``done`` of them cause. Each condition holds for a prefix of the inserts (the
        ratio error only grows, the table never shrinks while inserting), so the answer is the longer."""
        spi, ok = self.samples_per_insert, lambda m: (self.inserts + m) * spi - self.samples <= self.max_diff
        x = (self.max_diff + self.samples) / spi - self.inserts if spi > 0 else (math.inf if ok(1) else 0.0)
        by_ratio = n if x >= n else max(0, int(x))
        while by_ratio < n and ok(by_ratio + 1):  # floating point: settle on Reverb's own expression
            by_ratio += 1
        while by_ratio > 0 and not ok(by_ratio):
            by_ratio -= 1
        by_size = 0
        while (
            by_size < n
            and self.inserts + by_size + 1 - self.deletes - drops(by_size) <= self.min_size_to_sample
        ):
            by_size += 1
        return max(by_ratio, by_size)

    def admissible_samples(self, n: int) -> int:
        """How many of ``n`` samples in a row ``can_sample`` lets through now."""
        if self.inserts - self.deletes < self.min_size_to_sample:
            return 0
        ok = lambda m: self.inserts * self.samples_per_insert - (self.samples + m - 1) - 1 >= self.min_diff  # noqa: E731
        x = self.inserts * self.samples_per_insert - self.samples - self.min_diff
        k = n if x >= n else max(0, int(x))
        while k < n and ok(k + 1):
            k += 1
        while k > 0 and not ok(k):
            k -= 1
        return k

    def state(self) -> dict[str, float]:
        """Reverb's ``RateLimiterCheckpoint``: the options and the three counts."""
        keys = (
            "samples_per_insert",
            "min_size_to_sample",
            "min_diff",
            "max_diff",
            "inserts",
            "samples",
            "deletes",
        )
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def from_state(cls, state: Mapping[str, float]) -> RateLimiter:
        out = cls(
            state["samples_per_insert"], state["min_size_to_sample"], state["min_diff"], state["max_diff"]
        )
        out.inserts, out.samples, out.deletes = (int(state[k]) for k in ("inserts", "samples", "deletes"))
        return out


class _Table:
    """A FIFO ring of item ids (ascending: items arrive in id order) with its limiter and sample counts."""

    def __init__(self, capacity: int, limiter: RateLimiter):
        self.capacity, self.limiter = capacity, limiter
        self.ids = np.zeros(capacity, np.int64)
        self.times = np.zeros(capacity, np.int32)  # times each held item was sampled
        self.head = self.size = self.unique_samples = 0

    def ring(self, positions: np.ndarray) -> np.ndarray:
        return (self.head + positions) % self.capacity

    def held(self) -> np.ndarray:
        return self.ids[self.ring(np.arange(self.size))]

    def count_below(self, item_id: int) -> int:
        return bisect.bisect_left(
            range(self.size), item_id, key=lambda i: int(self.ids[(self.head + i) % self.capacity])
        )

    def drop_oldest(self, count: int) -> None:
        self.head, self.size = (self.head + count) % self.capacity, self.size - count
        self.limiter.delete(count)

    def append(self, first_id: int, k: int) -> None:
        """Items ``first_id ..`` (k <= capacity, the overwritten ones dropped already: no FIFO eviction)."""
        at = self.ring(np.arange(self.size, self.size + k))
        self.ids[at], self.times[at] = np.arange(first_id, first_id + k), 0
        self.size += k
        self.limiter.insert(k)

    def reset(self) -> None:
        self.head = self.size = self.unique_samples = 0
        self.limiter.reset()


class _Writer:
    """A writer's batches on their way in: queued by number, inserted in that order."""

    def __init__(self, stream: int):
        self.stream = stream  # its number in Store.stream (Reverb: its episode)
        self.next = self.start = 0  # the next batch to insert, and its segments in already
        self.queued: dict[int, tuple[Mapping[str, np.ndarray], tuple[str, ...]]] = {}


class Store:
    """The tables and their segments, in one process (the actor); thread-safe. Plain class: the tests
    drive it directly, ``start_server`` makes it a Ray actor."""

    def __init__(self, spec: ReplaySpec, checkpoint_dir: str | None = None, seed: int | None = None):
        self.spec, self.capacity, self.checkpoint_dir = spec, spec.capacity_items, checkpoint_dir
        shapes = spec.item_shapes()
        self.data = {k: np.empty((self.capacity, *shapes[k]), DTYPES[k]) for k in FIELDS}
        self.stream = np.zeros(self.capacity, np.int32)  # the writer of each slot (Reverb: its episode)
        self.next_id = 0  # the next segment's id; its slot is id % capacity
        self.tables = {t.name: _Table(self.capacity, RateLimiter.for_table(spec, t)) for t in spec.tables}
        self.writers: dict[str, _Writer] = {}
        self.first_stream = 1  # numbers of the writers (in self.stream): after those of a restored store
        self.cv = threading.Condition()
        self.rng = np.random.default_rng(seed)
        self.closed = False

    def describe(self) -> dict[str, Any]:
        """What clients check before they write or sample (and the process, for CPU accounting)."""
        return {"tables": list(self.tables), "item_shapes": self.spec.item_shapes(), "pid": os.getpid()}

    def _wait(self, deadline: float) -> bool:
        """Wait for a change until ``deadline``; False when it passed or the store stops."""
        left = deadline - time.monotonic()
        if left <= 0 or self.closed:
            return False
        self.cv.wait(left)
        return not self.closed

    def insert(self, batch: Mapping[str, np.ndarray], tables: Sequence[str], writer: str = "",
               seq: int | None = None) -> int:  # fmt: skip
        """Queue batch ``seq`` [N, L, ...] of ``writer`` for ``tables`` and insert, in the writer's order,
        what the limiters admit now; the rest goes in as samples make room (as items in flight at a
        Reverb server do). Never waits. Returns how many of this batch's segments are in."""
        with self.cv:
            w = self.writers.setdefault(writer, _Writer(len(self.writers) + self.first_stream))
            seq = w.next + len(w.queued) if seq is None else seq
            if unknown := set(tables) - set(self.tables):  # fails this call, not a later one's progress
                raise KeyError(f"no tables {sorted(unknown)} in the store (tables: {sorted(self.tables)})")
            w.queued[seq] = (batch, tuple(tables))
            self._progress()
            return len(batch[FIELDS[0]]) if w.next > seq else (w.start if w.next == seq else 0)

    def _progress(self) -> None:
        """Insert the queued batches, each writer's in order, as far as the limiters admit."""
        moved = False
        for w in self.writers.values():
            while w.next in w.queued:
                batch, tables = w.queued[w.next]
                total = len(batch[FIELDS[0]])
                if k := self._admissible(tables, total - w.start):
                    self._put(batch, tables, w.start, k, w.stream)
                    w.start, moved = w.start + k, True
                if w.start < total:
                    break
                del w.queued[w.next]
                w.next, w.start = w.next + 1, 0
        if moved:
            self.cv.notify_all()

    def wait_written(self, writer: str, seq: int, wait_s: float = WAIT_S) -> int:
        """Wait (at most ``wait_s``) until the writer's batches up to ``seq`` are in; returns how many
        of its batches are in whole."""
        deadline = time.monotonic() + wait_s
        with self.cv:
            w = self.writers.setdefault(writer, _Writer(len(self.writers) + self.first_stream))
            while w.next <= seq and self._wait(deadline):
                pass
            return w.next

    def forget(self, writer: str) -> int:
        """Drop what a writer still has queued (it gave up on it); returns the batches dropped."""
        with self.cv:
            w = self.writers.get(writer)
            if w is None:
                return 0
            dropped, w.queued = len(w.queued), {}
            return dropped

    def _admissible(self, tables: Sequence[str], n: int) -> int:
        """Segments of ``n`` every one of ``tables`` admits now (at most one storage ring's worth)."""
        n, cap = min(n, self.capacity), self.capacity
        for name in tables:
            t = self.tables[name]
            n = min(
                n, t.limiter.admissible_inserts(n, lambda done, t=t: t.count_below(self.next_id + done - cap))
            )
        return n

    def _put(
        self, batch: Mapping[str, np.ndarray], tables: Sequence[str], offset: int, k: int, stream: int
    ) -> None:
        first = self.next_id
        for t in self.tables.values():  # the slots about to be overwritten: tables drop those items first
            t.drop_oldest(t.count_below(first + k - self.capacity))
        slot = first % self.capacity
        head = min(k, self.capacity - slot)  # the ring wraps after `head` segments
        for f in FIELDS:
            src = batch[f][offset : offset + k]
            self.data[f][slot : slot + head], self.data[f][: k - head] = src[:head], src[head:]
        self.stream[slot : slot + head], self.stream[: k - head] = stream, stream
        self.next_id += k
        for name in tables:
            self.tables[name].append(first, k)

    def _take(self, table: str, n: int, wait_s: float) -> tuple[_Table, np.ndarray]:
        """Up to ``n`` items drawn uniformly (with replacement) as the limiter admits, at least one unless
        ``wait_s`` passes; returns the table and their ring positions. Called with the lock held."""
        t, deadline = self.tables[table], time.monotonic() + wait_s
        while (k := t.limiter.admissible_samples(n)) == 0:
            if not self._wait(deadline):
                return t, np.zeros(0, np.int64)
        t.limiter.samples += k
        at = t.ring(self.rng.integers(0, t.size, k))
        t.unique_samples += len(np.unique(at[t.times[at] == 0]))
        np.add.at(t.times, at, 1)
        self._progress()  # samples make room for queued inserts
        self.cv.notify_all()
        return t, at

    def sample(
        self, table: str, n: int, wait_s: float = WAIT_S
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Up to ``n`` segments (data [k, L, ...], each gathered once) and Reverb's sample info; k = 0
        when the limiter held every one back for ``wait_s`` s."""
        with self.cv:
            t, at = self._take(table, n, wait_s)
            ids = t.ids[at]
            slots = ids % self.capacity
            data = {f: self.data[f].take(slots, axis=0) for f in FIELDS}
            k, size = len(at), t.size
            info = {"key": ids.astype(np.uint64), "probability": np.full(k, 1.0 / max(size, 1)),
                    "table_size": np.full(k, size, np.int64), "times_sampled": t.times[at].copy()}  # fmt: skip
        return data, info

    def drain(self, table: str, n: int, wait_s: float = WAIT_S) -> int:
        """Take up to ``n`` items as a sampler does and drop them (no data moves); returns how many."""
        with self.cv:
            return len(self._take(table, n, wait_s)[1])

    def reset(self, table: str) -> None:
        with self.cv:
            self.tables[table].reset()
            self._progress()  # an emptied table admits inserts again
            self.cv.notify_all()

    def info(self) -> dict[str, dict[str, Any]]:
        """Reverb's ``table_info`` fields; ``num_deleted_episodes`` is not counted (always 0)."""
        out = {}
        with self.cv:
            for name, t in self.tables.items():
                lim = t.limiter
                streams = np.unique(self.stream[t.held() % self.capacity])
                out[name] = {"size": t.size, "max_size": self.capacity, "num_inserts": lim.inserts,
                             "num_samples": lim.samples, "num_unique_samples": t.unique_samples,
                             "num_episodes": len(streams), "num_deleted_episodes": 0,
                             "samples_per_insert": lim.samples_per_insert,
                             "min_size_to_sample": lim.min_size_to_sample, "min_diff": lim.min_diff,
                             "max_diff": lim.max_diff}  # fmt: skip
        return out

    def checkpoint(self, state: dict | None = None) -> str:
        """Write items, tables and limiter counts to ``CHECKPOINT_DIR/store`` (the one it replaces kept as
        ``store.old``), atomically, with ``state`` and a manifest; the tables wait meanwhile, as Reverb's."""
        self.checkpoint_dir = self.checkpoint_dir or tempfile.mkdtemp(prefix="ray_replay_")
        root = Path(self.checkpoint_dir)
        path = root / CHECKPOINT
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f".{CHECKPOINT}.tmp-*"):  # a save killed halfway
            shutil.rmtree(stale, ignore_errors=True)
        with self.cv:
            tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT}.tmp-", dir=root))
            used = min(self.next_id, self.capacity)
            for name, array in (*self.data.items(), ("stream", self.stream)):
                np.save(tmp / f"{name}.npy", array[:used])
            tables = {}
            for name, t in self.tables.items():
                np.save(tmp / f"table.{name}.npy", np.stack([t.held(), t.times[t.ring(np.arange(t.size))]]))
                tables[name] = {"limiter": t.limiter.state(), "unique_samples": t.unique_samples}
            shapes = {k: list(v) for k, v in self.spec.item_shapes().items()}
            meta = {
                "next_id": self.next_id,
                "capacity": self.capacity,
                "item_shapes": shapes,
                "tables": tables,
            }
            write_json_atomic(tmp / TABLES, meta, fsync=False)
            write_json_atomic(tmp / STATE, state or {}, fsync=False)
            write_manifest(tmp)
            _swap_in(tmp, path)
        return str(path)

    def restore(self, path: str) -> str | None:
        """Load the checkpoint at ``path`` whole, or nothing; returns None, or why it does not restore."""
        try:
            loaded = _load(Path(path), self.spec)
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint fails in many ways
            return one_line(e)
        with self.cv:
            meta, arrays = loaded
            used = len(arrays["stream"])
            for f in FIELDS:
                self.data[f][:used] = arrays[f]
            self.stream[:used] = arrays["stream"]
            self.next_id, self.first_stream = meta["next_id"], int(self.stream[:used].max(initial=0)) + 1
            for name, t in self.tables.items():
                t.reset()
                if saved := meta["tables"].get(name):
                    held, times = arrays[f"table.{name}"]
                    t.limiter = RateLimiter.from_state(saved["limiter"])  # as in Reverb: the saved limiter
                    t.ids[: len(held)], t.times[: len(held)], t.size = held, times, len(held)
                    t.unique_samples = saved["unique_samples"]
            self.cv.notify_all()
        return None

    def shutdown(self) -> None:
        """Wake every waiting call (they return what they did) before the actor is killed."""
        with self.cv:
            self.closed = True
            for t in self.tables.values():
                t.limiter.cancel(self.cv)


def _load(path: Path, spec: ReplaySpec) -> tuple[dict, dict[str, np.ndarray]]:
    """A checkpoint's record and arrays, checked against its manifest and against ``spec``."""
    check_manifest(path)
    meta = json.loads((path / TABLES).read_text())
    shapes = {k: list(v) for k, v in spec.item_shapes().items()}
    if meta["capacity"] != spec.capacity_items or meta["item_shapes"] != shapes:
        raise ValueError(f"it holds {meta['capacity']} items shaped {meta['item_shapes']}, the spec "
                         f"{spec.capacity_items} shaped {shapes}")  # fmt: skip
    unknown = set(meta["tables"]) - set(spec.table_names)
    if unknown:
        raise ValueError(f"it has tables {sorted(unknown)} the spec lacks")
    used = min(meta["next_id"], spec.capacity_items)
    arrays = {f: np.load(path / f"{f}.npy", mmap_mode="r" if used else None) for f in FIELDS}  # read once
    arrays.update(
        {n: np.load(path / f"{n}.npy") for n in ("stream", *(f"table.{t}" for t in meta["tables"]))}
    )
    if any(len(arrays[n]) != used for n in (*FIELDS, "stream")):
        raise ValueError("its item arrays are not all of the same length")
    return meta, arrays


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 160 else text[:157] + "..."
