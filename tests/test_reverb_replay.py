"""Reverb replay service: real server on localhost, two tables, writer/sampler round trips."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import portpicker
import pytest
import reverb

from deepcrl.buffer import reverb_replay as rr
from deepcrl.buffer import reverb_sampler as rs
from deepcrl.buffer import reverb_writer as rw

L, S, A = 5, 7, 3
LONG = 30.0  # generous timeout for things that must happen


def make_batch(rng: np.random.Generator, n: int, first_episode: int = 0) -> dict[str, np.ndarray]:
    """Random content (unique per segment) and an episode boundary inside every segment."""
    eid = np.empty((n, L), np.int32)
    for i in range(n):
        cut = 1 + i % (L - 1)
        eid[i, :cut] = first_episode + i
        eid[i, cut:] = first_episode + i + 1
    return {
        "state": rng.standard_normal((n, L, S)).astype(np.float32),
        "action": rng.standard_normal((n, L, A)).astype(np.float32),
        "episode_id": eid,
    }


def index_segments(batches: list[dict[str, np.ndarray]]) -> dict[bytes, dict[str, np.ndarray]]:
    out = {}
    for b in batches:
        for i in range(b["state"].shape[0]):
            out[b["state"][i].tobytes()] = {k: v[i] for k, v in b.items()}
    return out


def assert_batch_matches(
    batch: rs.SampledBatch, written: dict[bytes, dict[str, np.ndarray]], bsz: int
) -> None:
    data = batch.data
    assert set(data) == {"state", "action", "episode_id"}
    assert data["state"].shape == (bsz, L, S) and data["state"].dtype == np.float32
    assert data["action"].shape == (bsz, L, A) and data["action"].dtype == np.float32
    assert data["episode_id"].shape == (bsz, L) and data["episode_id"].dtype == np.int32
    assert batch.info["key"].shape == (bsz,)
    for j in range(bsz):
        ref = written[data["state"][j].tobytes()]  # KeyError if the content was never written
        np.testing.assert_array_equal(data["action"][j], ref["action"])
        np.testing.assert_array_equal(data["episode_id"][j], ref["episode_id"])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def spec_for(capacity_items: int = 1000, **kw) -> rr.ReplaySpec:
    return rr.make_spec(
        ["deep", "shallow"],
        capacity_steps=capacity_items * L + L - 1,  # rounding down to whole segments
        segment_length=L,
        state_size=S,
        action_size=A,
        **kw,
    )


def test_spec_converts_steps_to_items() -> None:
    spec = spec_for(capacity_items=7, min_size_steps=2 * L + 1)
    assert spec.capacity_items == 7
    assert spec.min_size_items == 3
    with pytest.raises(ValueError):
        rr.make_spec(["a", "a"], capacity_steps=10, segment_length=L, state_size=S, action_size=A)


def test_write_and_sample_two_tables(rng: np.random.Generator) -> None:
    spec = spec_for()
    server, address = rr.start_server(spec)
    try:
        batches = [make_batch(rng, 4, first_episode=10 * k) for k in range(3)]
        with rw.SegmentWriter(address, spec) as writer:
            for b in batches:
                assert writer.write(b) == 4 * L
            writer.flush(timeout_s=LONG)
            assert writer.segments_written == 12 and writer.steps_written == 12 * L
            assert writer.items_created == 24

        info = rr.table_info(address)
        for name in ("deep", "shallow"):
            assert info[name]["size"] == 12  # same items in both tables, from the same chunks
            assert info[name]["num_inserts"] == writer.segments_written

        written = index_segments(batches)
        for name in ("deep", "shallow"):
            with rs.SegmentSampler(address, name, 16, spec) as sampler:
                for _ in range(3):
                    assert_batch_matches(sampler.sample(timeout_s=LONG), written, 16)
                assert sampler.items_sampled == 48 and sampler.batches_sampled == 3
            # The thread may have prefetched more than it delivered, never fewer.
            assert rr.table_info(address)[name]["num_samples"] >= sampler.items_sampled
    finally:
        server.stop()


def test_writer_rejects_bad_shapes(rng: np.random.Generator) -> None:
    spec = spec_for()
    server, address = rr.start_server(spec)
    try:
        with rw.SegmentWriter(address, spec) as writer:
            bad = make_batch(rng, 2)
            bad["state"] = bad["state"][:, :, :-1]
            with pytest.raises(ValueError, match="state"):
                writer.write(bad)
            assert writer.segments_written == 0
    finally:
        server.stop()


def test_connect_fails_fast_on_dead_address_and_checks_shapes() -> None:
    spec = spec_for()
    port = portpicker.pick_unused_port()
    start = time.perf_counter()
    with pytest.raises(ConnectionError):
        rw.SegmentWriter(f"localhost:{port}", spec, connect_timeout_s=1)
    with pytest.raises(ConnectionError):
        rs.SegmentSampler(f"localhost:{port}", "deep", 4, spec, connect_timeout_s=1)
    assert time.perf_counter() - start < LONG
    server, address = rr.start_server(spec)
    try:
        other = rr.make_spec(["deep"], capacity_steps=100, segment_length=L, state_size=S + 1, action_size=A)
        with pytest.raises(ValueError, match="spec expects"):
            rw.SegmentWriter(address, other)
        with pytest.raises(KeyError):
            rs.SegmentSampler(address, "nope", 4, rr.make_spec(["nope"], **_dims()))
    finally:
        server.stop()


def _dims() -> dict[str, int]:
    return {"capacity_steps": 100, "segment_length": L, "state_size": S, "action_size": A}


def test_fifo_eviction_at_capacity(rng: np.random.Generator) -> None:
    spec = spec_for(capacity_items=4)
    server, address = rr.start_server(spec)
    try:
        batches = [make_batch(rng, 3), make_batch(rng, 3)]
        with rw.SegmentWriter(address, spec, tables=["deep"]) as writer:
            for b in batches:
                writer.write(b)
        info = rr.table_info(address)["deep"]
        assert info["size"] == 4 and info["max_size"] == 4 and info["num_inserts"] == 6
        assert rr.table_info(address)["shallow"]["size"] == 0  # writer restricted to one table

        newest = index_segments([{k: v[2:] for k, v in batches[0].items()}, batches[1]])
        with rs.SegmentSampler(address, "deep", 8, spec) as sampler:
            seen = set()
            for _ in range(5):
                batch = sampler.sample(timeout_s=LONG)
                assert_batch_matches(batch, newest, 8)  # the two oldest were evicted
                seen.update(batch.info["key"].tolist())
            assert len(seen) <= 4
    finally:
        server.stop()


def test_rate_limiter_blocks_inserts_and_samples(rng: np.random.Generator) -> None:
    # spi=1, min size 2 items, error buffer 2 -> allowed error (inserts - samples) in [0, 4].
    spec = spec_for(min_size_steps=2 * L, samples_per_insert=1.0, error_buffer=2.0)
    server, address = rr.start_server(spec)
    writer = rw.SegmentWriter(address, spec, tables=["deep"])
    sampler = None
    try:
        info = rr.table_info(address)["deep"]
        assert (info["min_diff"], info["max_diff"], info["min_size_to_sample"]) == (0.0, 4.0, 2)

        writer.write(make_batch(rng, 4))
        writer.flush(timeout_s=LONG)
        writer.write(make_batch(rng, 1))  # a 5th insert would put the error at 5 > 4: held back
        with pytest.raises(reverb.DeadlineExceededError):
            writer.flush(timeout_s=1.0)
        assert rr.table_info(address)["deep"]["num_inserts"] == 4

        sampler = rs.SegmentSampler(address, "deep", 1, spec, max_in_flight_samples=1, prefetch_batches=1)
        for _ in range(5):  # the first sample lets the 5th insert in, which allows a 5th sample
            sampler.sample(timeout_s=LONG)
        writer.flush(timeout_s=LONG)
        with pytest.raises(TimeoutError):
            sampler.sample(timeout_s=1.0)  # 5 inserts, 5 samples: the limiter holds the 6th
        info = rr.table_info(address)["deep"]
        assert info["num_inserts"] == 5 and info["num_samples"] == 5

        writer.write(make_batch(rng, 1))
        sampler.sample(timeout_s=LONG)  # unblocked by the insert
        assert sampler.items_sampled == 6
    finally:
        if sampler is not None:
            sampler.close()
        writer.close(timeout_s=LONG)
        server.stop()


def test_checkpoint_round_trip(rng: np.random.Generator, tmp_path) -> None:
    spec = spec_for()
    ckpt_dir = str(tmp_path / "reverb")
    server, address = rr.start_server(spec, checkpoint_dir=ckpt_dir)
    batches = [make_batch(rng, 4), make_batch(rng, 2)]
    try:
        with rw.SegmentWriter(address, spec) as writer:
            for b in batches:
                writer.write(b)
        before = rr.table_info(address)
        path = rr.checkpoint(address)
        assert os.path.isdir(path) and os.path.dirname(path.rstrip("/")) == ckpt_dir
    finally:
        server.stop()

    server, address = rr.start_server(spec, checkpoint_dir=ckpt_dir)
    try:
        after = rr.table_info(address)
        for name in ("deep", "shallow"):
            assert after[name]["size"] == before[name]["size"] == 6
            assert after[name]["num_inserts"] == before[name]["num_inserts"]
        with rs.SegmentSampler(address, "shallow", 8, spec) as sampler:
            assert_batch_matches(sampler.sample(timeout_s=LONG), index_segments(batches), 8)
        with rw.SegmentWriter(address, spec) as writer:  # and it keeps accepting data
            writer.write(make_batch(rng, 1))
        assert rr.table_info(address)["deep"]["size"] == 7
    finally:
        server.stop()


def test_async_writer_real_server(rng: np.random.Generator) -> None:
    spec = spec_for()
    server, address = rr.start_server(spec)
    try:
        batches = [make_batch(rng, 3) for _ in range(5)]
        writer = rw.AsyncSegmentWriter(rw.SegmentWriter(address, spec), queue_size=1)
        for b in batches:
            writer.put(b)
        writer.close(timeout_s=LONG)
        assert writer.puts == 5 and writer.batches_written == 5 and writer.steps_written == 15 * L
        info = rr.table_info(address)
        assert info["deep"]["size"] == info["shallow"]["size"] == 15
        with rs.SegmentSampler(address, "deep", 4, spec) as sampler:
            assert_batch_matches(sampler.sample(timeout_s=LONG), index_segments(batches), 4)
    finally:
        server.stop()


class FakeSink:
    """Stands in for SegmentWriter: records calls, can fail or hold a write until released."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.written: list[int] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.flushed = False
        self.closed = False

    def write(self, batch) -> int:
        self.started.set()
        if self.fail_on is not None and len(self.written) == self.fail_on:
            raise ValueError("injected fault")
        assert self.gate.wait(LONG)
        self.written.append(int(batch["tag"]))
        return L

    def flush(self, timeout_s: float | None = None) -> None:
        self.flushed = True

    def close(self, timeout_s: float | None = None) -> None:
        self.closed = True


def test_async_writer_surfaces_thread_error() -> None:
    sink = FakeSink(fail_on=1)
    writer = rw.AsyncSegmentWriter(sink, queue_size=1)
    with pytest.raises(rw.WriterThreadError) as err:
        for tag in range(10):  # fails on the 2nd write; put raises at the latest when the queue stays full
            writer.put({"tag": tag})
    assert isinstance(err.value.__cause__, ValueError)
    assert sink.written == [0]
    with pytest.raises(rw.WriterThreadError):
        writer.close(timeout_s=LONG)
    assert sink.closed


def test_async_writer_blocks_when_full_and_drains_on_close() -> None:
    sink = FakeSink()
    sink.gate.clear()
    writer = rw.AsyncSegmentWriter(sink, queue_size=2)
    writer.put({"tag": 0})
    assert sink.started.wait(LONG)  # the thread holds batch 0 and waits at the gate
    writer.put({"tag": 1})
    writer.put({"tag": 2})  # queue now full
    assert writer.puts_blocked == 0
    opener = threading.Timer(0.2, sink.gate.set)
    opener.start()
    t0 = time.perf_counter()
    writer.put({"tag": 3})  # must wait for the gate
    assert time.perf_counter() - t0 > 0.05
    assert writer.puts_blocked == 1 and writer.put_blocked_s > 0.0
    writer.close(timeout_s=LONG)
    opener.join()
    assert sink.written == [0, 1, 2, 3] and sink.flushed and sink.closed
    assert writer.batches_written == 4
    with pytest.raises(RuntimeError):
        writer.put({"tag": 4})
