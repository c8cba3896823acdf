"""The Ray replay backend: Reverb's rate limiter ported with Reverb's own test sequences, the store's
tables (FIFO, one copy per segment, uniform sampling, reset, drain, checkpoints) driven directly, and
writer and sampler through a store actor on a small local Ray."""

from __future__ import annotations

import itertools
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from deepcrl.buffer import ray_client as rc
from deepcrl.buffer import ray_replay as rp
from deepcrl.buffer.replay_spec import make_spec
from deepcrl.buffer.replay_store import RateLimiter, Store

pytestmark = pytest.mark.ray_lane  # the Ray backend: tested on both lanes

L, S, A = 5, 7, 3
LONG = 30.0  # generous timeout for things that must happen
SHORT = 0.1  # Reverb's kTimeout: how long a blocked call is watched to stay blocked
REVERB_INFO_KEYS = {"size", "max_size", "num_inserts", "num_samples", "num_unique_samples", "num_episodes",
                    "num_deleted_episodes", "samples_per_insert", "min_size_to_sample", "min_diff", "max_diff"}  # fmt: skip


def spec_for(capacity_items: int = 1000, tables=("deep", "shallow"), **kw):
    return make_spec(tables, capacity_steps=capacity_items * L + L - 1, segment_length=L, state_size=S,
                     action_size=A, **kw)  # fmt: skip


def make_batch(n: int, first: int = 0) -> dict[str, np.ndarray]:
    """Segment i's state holds the number first + i everywhere: a sample says which segment it is."""
    ids = np.arange(first, first + n, dtype=np.float32)
    return {"state": np.broadcast_to(ids[:, None, None], (n, L, S)).copy(),
            "action": np.broadcast_to(-ids[:, None, None], (n, L, A)).copy(),
            "episode_id": np.broadcast_to(ids[:, None].astype(np.int32), (n, L)).copy()}  # fmt: skip


def numbers(data: dict[str, np.ndarray]) -> list[int]:
    """Which written segments a sampled batch holds (checking each one is whole)."""
    out = data["state"][:, 0, 0].astype(int)
    np.testing.assert_array_equal(data["state"], np.broadcast_to(out[:, None, None], data["state"].shape))
    np.testing.assert_array_equal(data["action"], -data["state"][:, :, :A])
    np.testing.assert_array_equal(data["episode_id"], data["state"][:, :, 0].astype(np.int32))
    return out.tolist()


# ------------------------------------------------------------------- the rate limiter: Reverb's tests
def in_thread(fn) -> threading.Event:
    """Run ``fn`` on a thread; the event is set once it returned (its error, if any, re-raised on set)."""
    done = threading.Event()
    threading.Thread(target=lambda: (fn(), done.set()), daemon=True).start()
    return done


def test_blocks_samples_until_min_inserts_reached():
    limiter, cv = RateLimiter(1.0, 2, -1.0, 1.0), threading.Condition()
    sampled = in_thread(lambda: _locked(cv, limiter.await_and_finalize_sample, cv))
    assert not sampled.wait(SHORT)  # no inserts yet
    _insert(limiter, cv)
    assert not sampled.wait(SHORT)  # 1 insert is not enough
    _insert(limiter, cv)
    assert sampled.wait(LONG)  # 2 inserts are


def _locked(cv, fn, *args):
    with cv:
        return fn(*args)


def _insert(limiter, cv, timeout=None):
    with cv:
        limiter.await_can_insert(cv, timeout)
        limiter.insert(cv=cv)


def test_operations_within_the_buffer_are_not_blocked():
    limiter, cv = RateLimiter(1.5, 1, -3.0, 3.1), threading.Condition()
    _insert(limiter, cv, 0)  # min size not reached: diff 1.5
    _insert(limiter, cv, 0)  # diff 3.0, inside the buffer
    with cv:
        for _ in range(6):  # diff 2, 1, 0, -1, -2, -3
            limiter.await_and_finalize_sample(cv, 0)
        assert not limiter.can_sample(1)


def test_unblocks_calls_when_cancelled():
    limiter, cv = RateLimiter(1.0, 2, -1.0, 1.0), threading.Condition()
    errors = []

    def sample():
        try:
            _locked(cv, limiter.await_and_finalize_sample, cv)
        except RuntimeError as e:
            errors.append(str(e))

    returned = in_thread(sample)
    assert not returned.wait(SHORT)
    _locked(cv, limiter.cancel, cv)
    assert returned.wait(LONG) and errors == ["RateLimiter has been cancelled"]


def test_blocks_calls_that_exceed_the_min_max_limits():
    limiter, cv = RateLimiter(1.5, 2, -1.0, 3.0), threading.Condition()
    sampled = in_thread(lambda: _locked(cv, limiter.await_and_finalize_sample, cv))
    assert not sampled.wait(SHORT)  # diff 0
    _insert(limiter, cv)  # diff 1.5
    assert not sampled.wait(SHORT)
    _insert(limiter, cv)  # diff 3.0
    assert sampled.wait(LONG)  # diff 2.0
    inserted = in_thread(lambda: _insert(limiter, cv))  # would make diff 3.5
    assert not inserted.wait(SHORT)
    with cv:
        limiter.await_and_finalize_sample(cv)  # a sample lets it proceed
    assert inserted.wait(LONG)


def test_can_sample():
    limiter, cv = RateLimiter(1.0, 1, -1.0, 1.0), threading.Condition()
    assert not limiter.can_sample(1)
    _insert(limiter, cv, SHORT)
    assert limiter.can_sample(1) and limiter.can_sample(2) and not limiter.can_sample(3)


def test_can_insert():
    limiter, cv = RateLimiter(1.5, 2, 0.0, 5.0), threading.Condition()
    assert [limiter.can_insert(n) for n in (1, 2, 3, 4)] == [True, True, True, False]
    for _ in range(3):
        _insert(limiter, cv, SHORT)
    assert not limiter.can_insert(1)  # diff 6.0
    with cv:
        limiter.await_and_finalize_sample(cv, SHORT)  # diff 3.5
        limiter.await_and_finalize_sample(cv, SHORT)  # diff 2.5
    assert limiter.can_insert(1) and not limiter.can_insert(2)


def test_checkpoint_sets_options_and_counts_and_restores():
    limiter, cv = RateLimiter(1.5, 2, 0.0, 5.0), threading.Condition()
    options = {"samples_per_insert": 1.5, "min_size_to_sample": 2, "min_diff": 0.0, "max_diff": 5.0}
    assert limiter.state() == {**options, "inserts": 0, "samples": 0, "deletes": 0}
    _insert(limiter, cv, SHORT)
    _insert(limiter, cv, SHORT)
    with cv:
        limiter.await_and_finalize_sample(cv, SHORT)
        limiter.delete(cv=cv)
    checkpoint = limiter.state()
    assert checkpoint == {**options, "inserts": 2, "samples": 1, "deletes": 1}
    restored = RateLimiter.from_state(checkpoint)
    _insert(restored, cv, SHORT)
    with cv:
        restored.await_and_finalize_sample(cv, SHORT)
    assert restored.state() == {**options, "inserts": 3, "samples": 2, "deletes": 1}


def test_unblocks_inserts_if_deleted_items_bring_size_below_min_size():
    limiter, cv = RateLimiter(5, 2, 0.0, 5.0), threading.Condition()
    _insert(limiter, cv, SHORT)
    _insert(limiter, cv, SHORT)
    inserted = in_thread(lambda: _locked(cv, limiter.await_can_insert, cv))
    assert not inserted.wait(SHORT)
    with cv:
        limiter.await_and_finalize_sample(cv, SHORT)
    assert not inserted.wait(SHORT)  # still held back by the large samples_per_insert
    with cv:
        limiter.delete(cv=cv)  # below the min size again: inserts are free
    assert inserted.wait(LONG)


def test_blocks_samples_if_delete_brings_size_below_min_size():
    limiter, cv = RateLimiter(5, 2, 0.0, 5.0), threading.Condition()
    _insert(limiter, cv, SHORT)
    _insert(limiter, cv, SHORT)
    with cv:
        limiter.await_and_finalize_sample(cv, SHORT)
        limiter.delete(cv=cv)
    sampled = in_thread(lambda: _locked(cv, limiter.await_and_finalize_sample, cv))
    assert not sampled.wait(SHORT)
    _locked(cv, limiter.await_can_insert, cv, SHORT)  # staging an insert does not unblock it
    assert not sampled.wait(SHORT)
    with cv:
        limiter.insert(cv=cv)
    assert sampled.wait(LONG)


def test_info_and_a_non_positive_min_size():
    assert RateLimiter(1.5, 14, -10, 5.3).state() == {"samples_per_insert": 1.5, "min_size_to_sample": 14,
        "min_diff": -10.0, "max_diff": 5.3, "inserts": 0, "samples": 0, "deletes": 0}  # fmt: skip
    for bad in (0, -1):
        with pytest.raises(ValueError):
            RateLimiter(1, bad, 0, 5)


def test_the_spec_gives_reverbs_limiters():
    spec = spec_for(min_size_steps=2 * L, samples_per_insert=1.0, error_buffer=2.0)
    limiter = RateLimiter.for_table(spec, spec.tables[0])  # offset spi * min size = 2, +- 2
    assert (limiter.min_diff, limiter.max_diff, limiter.min_size_to_sample) == (0.0, 4.0, 2)
    plain = spec_for(min_size_steps=3 * L)
    no_ratio = RateLimiter.for_table(plain, plain.tables[0])  # Reverb's MinSize
    assert no_ratio.samples_per_insert == 1.0 and no_ratio.min_diff < -1e300 < 1e300 < no_ratio.max_diff
    narrow = spec_for(samples_per_insert=4.0, error_buffer=3.0)
    with pytest.raises(ValueError, match="error_buffer"):
        RateLimiter.for_table(narrow, narrow.tables[0])


def test_admissible_counts_equal_one_call_at_a_time():
    """What the store admits in one step equals Reverb's one insert (sample) at a time."""
    rng = random.Random(0)
    for _ in range(2000):
        spi = rng.choice([0.0, 0.5, 1.0, 1.5, 5.0, 400.0])
        limiter = RateLimiter(spi, rng.randint(1, 6), rng.uniform(-50, 5), rng.uniform(5, 900))
        limiter.inserts, limiter.samples = rng.randint(0, 30), rng.randint(0, 3000)
        limiter.deletes = rng.randint(0, limiter.inserts)
        n = rng.randint(1, 40)
        one_by_one, inserts = RateLimiter.from_state(limiter.state()), 0
        while inserts < n and one_by_one.can_insert(1):
            one_by_one.inserts, inserts = one_by_one.inserts + 1, inserts + 1
        assert limiter.admissible_inserts(n) == inserts, limiter.state()
        one_by_one = RateLimiter.from_state(limiter.state())
        samples = 0
        while samples < n and one_by_one.can_sample(1):
            one_by_one.samples, samples = one_by_one.samples + 1, samples + 1
        assert limiter.admissible_samples(n) == samples, limiter.state()


# ------------------------------------------------------------------- the store, driven directly
def test_fifo_eviction_at_capacity():
    store = Store(spec_for(capacity_items=4), seed=0)
    assert store.insert(make_batch(3), ["deep"]) == 3 and store.insert(make_batch(3, 3), ["deep"]) == 3
    info = store.info()
    assert (info["deep"]["size"], info["deep"]["max_size"], info["deep"]["num_inserts"]) == (4, 4, 6)
    assert info["shallow"]["size"] == 0 and set(info["deep"]) == REVERB_INFO_KEYS
    assert store.tables["deep"].held().tolist() == [2, 3, 4, 5]
    assert set(numbers(store.sample("deep", 64)[0])) == {2, 3, 4, 5}  # the two oldest were evicted


def test_a_segment_for_two_tables_is_stored_once():
    store = Store(spec_for(capacity_items=4), seed=0)
    store.insert(make_batch(3), ["deep", "shallow"])
    assert store.next_id == 3  # three storage slots used, not six
    assert store.tables["deep"].held().tolist() == store.tables["shallow"].held().tolist() == [0, 1, 2]
    assert numbers({k: v[:3] for k, v in store.data.items()}) == [0, 1, 2]
    # The storage ring overwrites slots: a table still holding those items drops them (its oldest).
    store.insert(make_batch(3, 3), ["deep"])
    shallow = store.tables["shallow"]
    assert shallow.held().tolist() == [2] and shallow.limiter.state()["deletes"] == 2
    assert store.info()["shallow"]["num_inserts"] == 3 and numbers(store.sample("shallow", 4)[0]) == [2] * 4


def test_sampling_is_uniform_chi_square():
    """Counts of 20 items over 40,000 draws against the uniform law (fixed seed). The statistic must stay
    under the 0.1 % critical value of chi-square with 19 degrees of freedom, which a sampler that never
    drew one of the items would exceed many times over."""
    store, k = Store(spec_for(capacity_items=20), seed=0), 20
    store.insert(make_batch(k), ["deep"])
    drawn = np.concatenate([numbers(store.sample("deep", 1000)[0]) for _ in range(40)])
    counts, expected = np.bincount(drawn, minlength=k), len(drawn) / k
    chi2 = lambda c: float(((c - expected) ** 2 / expected).sum())  # noqa: E731
    assert chi2(counts) < 43.82, counts
    skewed = counts.copy()
    skewed[0], skewed[1] = 0, skewed[1] + skewed[0]  # one item never drawn: the test would catch it
    assert chi2(skewed) > 43.82
    info = store.sample("deep", 5)[1]
    assert (
        set(info) == {"key", "probability", "table_size", "times_sampled"} and (info["table_size"] == k).all()
    )


def test_reset_empties_items_and_counts():
    store = Store(spec_for(min_size_steps=2 * L, samples_per_insert=1.0, error_buffer=2.0), seed=0)
    store.insert(make_batch(4), ["deep", "shallow"])
    assert len(store.sample("deep", 3)[0]["state"]) == 3
    store.reset("deep")
    info = store.info()
    assert (info["deep"]["size"], info["deep"]["num_inserts"], info["deep"]["num_samples"]) == (0, 0, 0)
    assert (info["shallow"]["size"], info["shallow"]["num_inserts"]) == (4, 4)
    assert len(store.sample("deep", 1, wait_s=SHORT)[0]["state"]) == 0  # below its min size again
    store.insert(make_batch(2, 4), ["deep"])
    assert numbers(store.sample("deep", 2)[0])[0] in (4, 5)


def test_drain_takes_what_the_limiter_admits_and_moves_no_data():
    store = Store(spec_for(min_size_steps=2 * L, samples_per_insert=1.0, error_buffer=2.0), seed=0)
    assert store.drain("deep", 10, wait_s=SHORT) == 0  # below min size: held back, then gives up
    store.insert(make_batch(4), ["deep"])  # diff 4: samples may take it down to min_diff 0
    assert store.drain("deep", 10, wait_s=SHORT) == 4
    assert store.drain("deep", 1, wait_s=SHORT) == 0
    assert store.info()["deep"]["num_samples"] == 4


def test_a_blocked_sampler_does_not_block_an_insert():
    store = Store(spec_for(min_size_steps=2 * L), seed=0)
    got = []
    sampled = in_thread(lambda: got.append(len(store.sample("deep", 4, wait_s=LONG)[0]["state"])))
    assert not sampled.wait(SHORT)
    start = time.perf_counter()
    assert store.insert(make_batch(1), ["deep"]) == 1  # while the sampler waits on the limiter
    assert time.perf_counter() - start < 1.0 and not sampled.wait(SHORT)
    store.insert(make_batch(1, 1), ["deep"])
    assert sampled.wait(LONG) and got == [4]


def test_inserts_wait_in_the_store_for_room_and_their_turn():
    store = Store(spec_for(min_size_steps=2 * L, samples_per_insert=1.0, error_buffer=2.0), seed=0)
    assert store.insert(make_batch(5), ["deep"]) == 4  # the 5th would put the error at 5 > 4: it waits
    assert store.info()["deep"]["num_inserts"] == 4 and store.wait_written("", 0, wait_s=SHORT) == 0
    assert store.drain("deep", 1) == 1  # a sample makes room: in it goes
    assert store.info()["deep"]["num_inserts"] == 5 and store.wait_written("", 0, wait_s=0) == 1
    free = Store(
        spec_for(), seed=0
    )  # a writer's batches go in in the order written, whatever the calls' order
    assert free.insert(make_batch(2, 2), ["deep"], "w", seq=1) == 0 and free.wait_written("w", 1, 0) == 0
    assert free.insert(make_batch(2), ["deep"], "w", seq=0) == 2 and free.wait_written("w", 1, 0) == 2
    assert free.tables["deep"].held().tolist() == [0, 1, 2, 3]
    assert numbers({k: v[:4] for k, v in free.data.items()}) == [0, 1, 2, 3]
    with pytest.raises(KeyError):
        free.insert(make_batch(1), ["nope"])


def _checkpointed(tmp_path: Path) -> tuple[Store, dict]:
    spec = spec_for(capacity_items=8, min_size_steps=2 * L, samples_per_insert=1.0, error_buffer=20.0)
    store = Store(spec, str(tmp_path / "replay"), seed=0)
    store.insert(make_batch(6), ["deep", "shallow"])
    store.insert(make_batch(4, 6), ["deep"])
    store.sample("deep", 5)
    return store, store.info()


def test_checkpoint_round_trip(tmp_path):
    store, before = _checkpointed(tmp_path)
    path = store.checkpoint({"drained": {"deep": 2}})
    assert path == str(tmp_path / "replay" / "store") and rp.latest_checkpoint(tmp_path / "replay") == Path(
        path
    )
    restored = Store(store.spec, str(tmp_path / "replay"), seed=1)
    assert restored.restore(path) is None
    assert restored.info() == before and rp.restored_state(Path(path)) == {"drained": {"deep": 2}}
    for name, t in store.tables.items():
        assert restored.tables[name].held().tolist() == t.held().tolist()
        assert restored.tables[name].limiter.state() == t.limiter.state()
    assert numbers(restored.sample("shallow", 16)[0]) and restored.next_id == store.next_id == 10
    assert restored.insert(make_batch(1, 10), ["deep"]) == 1  # and it keeps accepting data


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    store, _ = _checkpointed(tmp_path)
    root = tmp_path / "replay"
    first = store.info()
    store.checkpoint()
    store.insert(make_batch(1, 10), ["shallow"])
    store.checkpoint()  # the first is now store.old
    data = root / "store" / "state.npy"
    data.write_bytes(data.read_bytes()[:-7] + b"garbage")
    fresh = Store(store.spec, str(root), seed=0)
    assert rp.restore_first_good(root, lambda p: fresh.restore(str(p))) == root / "store.old"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "state.npy has corrupted bytes" in warnings[0], warnings
    assert fresh.info() == first and (root.parent / "replay.damaged" / "store").is_dir()
    fresh.checkpoint()  # the damaged one was set aside: the restored one stays the previous
    assert rp.restorable(root) == [root / "store", root / "store.old"]
    for folder in rp.restorable(root):
        (folder / "tables.json").write_text("{")
    empty = Store(store.spec, str(root), seed=0)
    assert rp.restore_first_good(root, lambda p: empty.restore(str(p))) is None
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "empty tables" in err and empty.info()["deep"]["size"] == 0


def test_frozen_copy_lifts_the_rate_limits(tmp_path):
    store, before = _checkpointed(tmp_path)
    store.checkpoint()
    assert store.drain("deep", 100, wait_s=SHORT) < 100  # the ratio holds the samples back
    counts = rp.frozen_copy(tmp_path / "replay", tmp_path / "frozen")
    assert counts["deep"] == {
        "inserts": before["deep"]["num_inserts"],
        "samples": before["deep"]["num_samples"],
    }
    frozen = Store(store.spec, str(tmp_path / "frozen"), seed=0)
    assert frozen.restore(str(tmp_path / "frozen" / "store")) is None
    assert frozen.drain("deep", 1000, wait_s=SHORT) == 1000  # only the min size remains
    assert frozen.info()["deep"]["size"] == before["deep"]["size"]
    with pytest.raises(FileNotFoundError):
        rp.frozen_copy(tmp_path / "nothing", tmp_path / "frozen2")


# ------------------------------------------------------------------- through Ray
def test_writer_and_sampler_through_the_object_store(joined_ray):
    spec = spec_for()
    server, address = rp.start_server(spec)
    try:
        assert address.startswith("ray:") and server.port is None
        with rc.SegmentWriter(address, spec, max_in_flight_items=10**6) as writer:
            for k in range(12):  # all in flight at once: the store still takes them in order
                assert writer.write(make_batch(4, 4 * k)) == 4 * L
            writer.flush(timeout_s=LONG)
            assert (writer.segments_written, writer.steps_written, writer.items_created) == (48, 48 * L, 96)
        info = rp.table_info(address, timeout_s=LONG)
        assert all(info[t]["size"] == info[t]["num_inserts"] == 48 for t in ("deep", "shallow"))
        assert set(info["deep"]) == REVERB_INFO_KEYS
        stored = np.load(Path(rp.checkpoint(address)) / "state.npy")[:, 0, 0]
        assert stored.tolist() == list(range(48))  # one slot per segment, in the order written
        for table in ("deep", "shallow"):
            with rc.SegmentSampler(address, table, 16, spec) as sampler:
                for _ in range(3):
                    batch = sampler.sample(timeout_s=LONG)
                    assert set(numbers(batch.data)) <= set(range(48)) and batch.info["key"].shape == (16,)
                    assert {k: v.dtype for k, v in batch.data.items()} == {
                        "action": np.float32, "episode_id": np.int32, "state": np.float32}  # fmt: skip
                assert sampler.items_sampled == 48 and sampler.batches_sampled == 3
            assert rp.table_info(address)[table]["num_samples"] >= 48
        take = rp.drain_sampler(address, "shallow")
        assert take() == 1 and take(100, timeout_s=LONG) == 63  # the rest of the 64 it took ahead
        assert (
            take(100, timeout_s=LONG) == 100 and rp.table_info(address)["shallow"]["num_samples"] >= 48 + 164
        )
        with pytest.raises(rp.StoreGone):
            rp.table_info(address.replace("replay-", "replay-x"), timeout_s=LONG)  # an address of no store
    finally:
        server.stop()


def test_limits_and_timeouts_through_ray(joined_ray):
    spec = spec_for(min_size_steps=2 * L, samples_per_insert=1.0, error_buffer=2.0)
    server, address = rp.start_server(spec)
    writer, sampler = rc.SegmentWriter(address, spec, tables=["deep"]), None
    try:
        writer.write(make_batch(4))
        writer.flush(timeout_s=LONG)
        writer.write(make_batch(1, 4))  # a 5th insert would put the error at 5 > 4: held back
        with pytest.raises(TimeoutError):
            writer.flush(timeout_s=1.0)
        assert rp.table_info(address)["deep"]["num_inserts"] == 4
        sampler = rc.SegmentSampler(address, "deep", 1, spec, prefetch_batches=1)
        for _ in range(5):  # the first sample lets the 5th insert in, which allows a 5th sample
            sampler.sample(timeout_s=LONG)
        writer.flush(timeout_s=LONG)
        with pytest.raises(TimeoutError):
            sampler.sample(timeout_s=0.5)  # 5 inserts, 5 samples: the limiter holds the 6th
        info = rp.table_info(address)["deep"]
        assert info["num_inserts"] == 5 and info["num_samples"] == 5
        take = rp.drain_sampler(address, "deep")
        assert take(10, timeout_s=0.3) == 0  # nothing to take: 5 inserts, 5 samples
        writer.write(make_batch(1, 5))
        assert sampler.sample(timeout_s=LONG) and sampler.items_sampled == 6  # unblocked by the insert
        rp.reset_table(address, "deep")
        assert rp.table_info(address)["deep"]["size"] == 0
    finally:
        if sampler is not None:
            sampler.close()
        writer.close(timeout_s=LONG)
        server.stop()


def test_restart_restores_and_a_dead_stores_clients_wait_as_reverbs_do(joined_ray, tmp_path):
    spec = spec_for(capacity_items=8, tables=("deep",))
    root = tmp_path / "replay"
    server, address = rp.start_server(spec, checkpoint_dir=str(root))
    with rc.SegmentWriter(address, spec) as writer:
        writer.write(make_batch(6))
    before = rp.table_info(address)
    path = rp.save_checkpoint(address, root, {"drained": {"deep": 1}}, log=rp.server_log(root))
    assert "stored checkpoint" in rp.server_log(root).read_text()
    sampler = rc.SegmentSampler(address, "deep", 2, spec)
    sampler.sample(timeout_s=LONG)
    writer = rc.SegmentWriter(address, spec)
    ray.kill(server.actor, no_restart=True)  # the store dies
    start = time.perf_counter()
    with pytest.raises(rp.StoreGone):
        while time.perf_counter() - start < 10:  # ray.kill lands a moment later
            rp.table_info(address, timeout_s=LONG)
    with pytest.raises(TimeoutError):  # nothing more comes, as from a Reverb server that is down
        for _ in itertools.count():
            sampler.sample(timeout_s=3)
    assert sampler.store_gone
    with pytest.raises(rp.StoreGone):
        writer.write(make_batch(1))
        writer.flush(timeout_s=LONG)
    assert time.perf_counter() - start < 10
    server, address2 = rp.start_server(spec, checkpoint_dir=str(root))  # a new store, a new address
    try:
        assert address2 != address and rp.table_info(address2) == before
        assert rp.restored_state(Path(path)) == {"drained": {"deep": 1}}
    finally:
        server.stop()
