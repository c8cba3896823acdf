"""Insert and sample throughput of the Reverb replay service for Ant- and Humanoid-sized segments.

    .venv/bin/python benchmarks/reverb_throughput.py [--segment_length 62 --num_envs 64 --batch_size 256]

The server runs in its own process, as in the distributed mode: a sampler in the server's process would
read the tables directly and skip gRPC, which flatters the figures. Writer and samplers run here, one at a
time. MB/s counts the raw payload (state + action + episode_id, 4 bytes each per step).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections.abc import Callable

import numpy as np

from deepcrl.buffer import reverb_replay as rr  # noqa: E402
from deepcrl.buffer import reverb_sampler as rs  # noqa: E402
from deepcrl.buffer import reverb_writer as rw  # noqa: E402

SIZES = {"ant": (29, 8), "humanoid": (268, 17)}
TABLES = ("deep", "shallow")


def _serve(spec: rr.ReplaySpec, conn, stop) -> None:
    server, address = rr.start_server(spec)
    conn.send(address)
    stop.wait()
    server.stop()


def _segment_batch(rng: np.random.Generator, n: int, spec: rr.ReplaySpec) -> dict[str, np.ndarray]:
    L = spec.segment_length
    return {
        "state": rng.standard_normal((n, L, spec.state_size), dtype=np.float32),
        "action": rng.standard_normal((n, L, spec.action_size), dtype=np.float32),
        "episode_id": np.repeat(np.arange(n, dtype=np.int32)[:, None], L, axis=1),
    }


def _timed(step: Callable[[], int], seconds: float, finish: Callable[[], None] = lambda: None) -> float:
    """Run `step` (returns steps done) for about `seconds`, then `finish`; returns steps per second."""
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += step()
    finish()
    return steps / (time.perf_counter() - start)


def _insert_rate(
    address: str, spec: rr.ReplaySpec, tables: tuple[str, ...], batches: list, secs: float
) -> float:
    with rw.SegmentWriter(address, spec, tables=tables) as writer:
        writer.write(batches[0])  # warm-up: connection, signature check
        count = iter(range(1 << 62))
        return _timed(lambda: writer.write(batches[next(count) % len(batches)]), secs, writer.flush)


def _sample_rate(next_batch: Callable[[], object], steps_per_batch: int, secs: float) -> float:
    next_batch()  # warm-up
    return _timed(lambda: (next_batch(), steps_per_batch)[1], secs)


def bench_size(name: str, args: argparse.Namespace) -> list[tuple[str, str, str, float, float]]:
    """Median over `args.repeats` rounds of every path, for one segment size."""
    state_size, action_size = SIZES[name]
    spec = rr.make_spec(
        TABLES,
        capacity_steps=args.capacity_steps,
        segment_length=args.segment_length,
        state_size=state_size,
        action_size=action_size,
        min_size_steps=args.batch_size * args.segment_length,
    )
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    stop = ctx.Event()
    proc = ctx.Process(target=_serve, args=(spec, child, stop), daemon=True)
    proc.start()
    address = parent.recv()
    rng = np.random.default_rng(0)
    batches = [_segment_batch(rng, args.num_envs, spec) for _ in range(4)]
    B, secs = args.batch_size, args.seconds
    steps_per_batch = B * spec.segment_length
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        sampler = rs.SegmentSampler(address, "deep", B, spec)
        dataset = None
        for _ in range(args.repeats):
            for tables in (TABLES[:1], TABLES):
                rate = _insert_rate(address, spec, tables, batches, secs)
                rates.setdefault(("insert", f"SegmentWriter, {len(tables)} table(s)"), []).append(rate)
            dataset = dataset or rs.dataset_batches(address, "deep", B)
            paths = {
                "SegmentSampler (chosen)": sampler.sample,
                "Client.sample per batch": lambda: rs.sample_batch_per_call(address, "deep", B),
                "TrajectoryDataset": lambda d=dataset: next(d),
            }
            for how, fn in paths.items():
                rates.setdefault(("sample", how), []).append(_sample_rate(fn, steps_per_batch, secs))
        sampler.close()
    finally:
        stop.set()
        proc.join(30)
    mb = spec.bytes_per_step() / 1e6
    return [(name, op, how, float(np.median(r)), float(np.median(r)) * mb) for (op, how), r in rates.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--segment_length", type=int, default=62)
    p.add_argument("--num_envs", type=int, default=64, help="segments per written batch (N)")
    p.add_argument("--batch_size", type=int, default=256, help="segments per sampled batch (B)")
    p.add_argument("--capacity_steps", type=int, default=250_000, help="per table; FIFO evicts beyond")
    p.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    p.add_argument("--repeats", type=int, default=3, help="rounds per path; the median is printed")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = p.parse_args()

    rows = []
    for name in args.sizes:
        rows += bench_size(name, args)

    print(
        f"\nsegment_length={args.segment_length} N={args.num_envs} B={args.batch_size} "
        f"capacity={args.capacity_steps} steps, median of {args.repeats} x {args.seconds:g} s, "
        "server in its own process\n"
    )
    header = f"| {'size':<9}| {'op':<7}| {'path':<32}| {'steps/s':>11} | {'MB/s':>7} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for size, op, how, rate, mbs in rows:
        print(f"| {size:<9}| {op:<7}| {how:<32}| {rate:>11,.0f} | {mbs:>7.1f} |")


if __name__ == "__main__":
    main()
