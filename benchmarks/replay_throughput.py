"""Insert and sample throughput of both replay backends, Reverb and Ray, at the same sizes, interleaved.

    .venv/bin/python benchmarks/replay_throughput.py [--repeats 2 --seconds 2 --sizes ant humanoid]

The sizes of ``reverb_throughput.py`` (docs/benchmarks.md): segments of L = 62 steps, Ant-like (state
29, action 8) and Humanoid-like (state 268, action 17), N = 64 segments per written batch, B = 256 per
sampled batch, 250,000 steps of capacity. Each backend's server runs in a process of its own (Reverb: a
spawned process; Ray: the store actor's worker), writer and sampler here, one at a time, as in a
distributed run. Per repeat the two backends take turns at going first; every measurement counts wall
time and CPU seconds: this process (writer or sampler, with its gRPC or Ray threads), the server's
process, and for Ray its daemons (raylet, GCS), which move the object store's data.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from collections.abc import Callable

import numpy as np
import ray
from common import ServerProcess, log, machine, median, proc_cpu_s, rotated

from deepcrl.buffer import ray_client, ray_replay
from deepcrl.buffer.replay_spec import ReplaySpec, make_spec

SIZES = {"ant": (29, 8), "humanoid": (268, 17)}
TABLES = ("deep", "shallow")
OPS = ("insert, 1 table", "insert, 2 tables", "sample")


class Backend:
    """One backend's server for one size and its clients' classes; ``cpu()``: its processes' CPU s."""

    def __init__(self, name: str, spec: ReplaySpec) -> None:
        self.name, self.spec = name, spec
        if name == "reverb":
            from deepcrl.buffer import reverb_sampler, reverb_writer  # Reverb + TensorFlow, when installed

            self._server = ServerProcess(spec)
            self.address, self._pids = self._server.address, []
            self.writer, self.sampler = reverb_writer.SegmentWriter, reverb_sampler.SegmentSampler
        else:
            self._server, self.address = ray_replay.start_server(spec)
            store = ray.get(self._server.actor.describe.remote())["pid"]
            self._pids = [store, *_ray_daemons()]
            self.writer, self.sampler = ray_client.SegmentWriter, ray_client.SegmentSampler

    def cpu(self) -> tuple[float, float]:
        """(server process CPU s, Ray daemons CPU s)."""
        if self.name == "reverb":
            return self._server.cpu_s(), 0.0
        return proc_cpu_s(self._pids[0]), sum(_cpu_or_zero(p) for p in self._pids[1:])

    def close(self) -> None:
        self._server.close() if self.name == "reverb" else self._server.stop()


def _ray_daemons() -> list[int]:
    """PIDs of this Ray's own daemons (raylet, GCS, ...), never another user's."""
    try:
        node = ray._private.worker._global_node
        return [info.process.pid for infos in node.all_processes.values() for info in infos]
    except Exception:  # noqa: BLE001 - a private API: without it the daemons' CPU is not counted
        return []


def _cpu_or_zero(pid: int) -> float:
    try:
        return proc_cpu_s(pid)
    except OSError:
        return 0.0


def _segment_batch(rng: np.random.Generator, n: int, spec: ReplaySpec) -> dict[str, np.ndarray]:
    L = spec.segment_length
    return {
        "state": rng.standard_normal((n, L, spec.state_size), dtype=np.float32),
        "action": rng.standard_normal((n, L, spec.action_size), dtype=np.float32),
        "episode_id": np.repeat(np.arange(n, dtype=np.int32)[:, None], L, axis=1),
    }


def _measure(backend: Backend, step: Callable[[], int], secs: float, finish: Callable[[], None]) -> dict:
    """Run ``step`` (returns steps done) for about ``secs``, then ``finish``; steps, wall and CPU s."""
    server0, daemons0, client0 = *backend.cpu(), time.process_time()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < secs:
        steps += step()
    finish()
    wall = time.perf_counter() - start
    server1, daemons1 = backend.cpu()
    return {"steps": steps, "wall": wall, "client": time.process_time() - client0,
            "server": server1 - server0, "daemons": daemons1 - daemons0}  # fmt: skip


def _round(backend: Backend, batches: list, args: argparse.Namespace) -> dict[str, dict]:
    """One measurement of every op on ``backend``."""
    out, count = {}, iter(range(1 << 62))
    for op, tables in zip(OPS[:2], (TABLES[:1], TABLES), strict=True):
        with backend.writer(backend.address, backend.spec, tables=tables) as writer:
            writer.write(batches[0])  # warm-up: connection, checks
            writer.flush()
            step = lambda w=writer: w.write(batches[next(count) % len(batches)])  # noqa: E731
            out[op] = _measure(backend, step, args.seconds, writer.flush)
    with backend.sampler(backend.address, "deep", args.batch_size, backend.spec) as sampler:
        sampler.sample()  # warm-up
        steps = args.batch_size * backend.spec.segment_length
        out["sample"] = _measure(backend, lambda: (sampler.sample(), steps)[1], args.seconds, lambda: None)
    return out


def bench_size(size: str, names: list[str], args: argparse.Namespace) -> dict[tuple[str, str], list[dict]]:
    state_size, action_size = SIZES[size]
    spec = make_spec(TABLES, capacity_steps=args.capacity_steps, segment_length=args.segment_length,
                     state_size=state_size, action_size=action_size,
                     min_size_steps=args.batch_size * args.segment_length)  # fmt: skip
    rng = np.random.default_rng(0)
    batches = [_segment_batch(rng, args.num_envs, spec) for _ in range(4)]
    backends = {name: Backend(name, spec) for name in names}
    runs: dict[tuple[str, str], list[dict]] = {}
    try:
        for r in range(args.repeats):
            for name in rotated(names, r):
                log(f"{size}: {name}, round {r + 1} of {args.repeats}")
                for op, run in _round(backends[name], batches, args).items():
                    runs.setdefault((op, name), []).append(run)
    finally:
        for b in backends.values():
            b.close()
    return runs


def report(rows: list[tuple[str, str, str, list[dict]]], bytes_per_step: dict[str, int]) -> None:
    print("\n| size | op | backend | steps/s (median) | MB/s | Ray / Reverb | wall s | CPU s: client "
          "+ server + Ray daemons | CPU s per M steps |")  # fmt: skip
    print("|---|---|---|--:|--:|--:|--:|---|--:|")
    rates: dict[tuple[str, str, str], float] = {}
    for size, op, name, runs in rows:
        rate = median([r["steps"] / r["wall"] for r in runs])
        rates[(size, op, name)] = rate
        total = {k: sum(r[k] for r in runs) for k in ("steps", "wall", "client", "server", "daemons")}
        cpu = total["client"] + total["server"] + total["daemons"]
        ratio = (
            rate / rates[(size, op, "reverb")] if name == "ray" and (size, op, "reverb") in rates else None
        )
        print(f"| {size} | {op} | {name} | {rate:,.0f} | {rate * bytes_per_step[size] / 1e6:,.1f} | "
              f"{f'{ratio:.2f}x' if ratio else ''} | {total['wall']:.1f} | {total['client']:.1f} + "
              f"{total['server']:.1f} + {total['daemons']:.1f} | {cpu / total['steps'] * 1e6:.2f} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--segment_length", type=int, default=62)
    p.add_argument("--num_envs", type=int, default=64, help="segments per written batch (N)")
    p.add_argument("--batch_size", type=int, default=256, help="segments per sampled batch (B)")
    p.add_argument("--capacity_steps", type=int, default=250_000, help="FIFO evicts beyond")
    p.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    p.add_argument("--repeats", type=int, default=2, help="rounds per backend; the median rate is printed")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--ray_cpus", type=int, default=2, help="CPUs of the local Ray this starts")
    args = p.parse_args()

    names = ["reverb", "ray"] if importlib.util.find_spec("reverb") else ["ray"]
    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=2 << 30, logging_level="ERROR", log_to_driver=False)  # fmt: skip
    rows = []
    try:
        for size in args.sizes:
            runs = bench_size(size, names, args)
            rows += [(size, op, name, runs[(op, name)]) for op in OPS for name in names]
    finally:
        ray.shutdown()
    print(f"\n{machine()}, load average {os.getloadavg()[0]:.1f} (1 min) at the end")
    print(f"segment_length={args.segment_length} N={args.num_envs} B={args.batch_size} capacity="
          f"{args.capacity_steps} steps, median of {args.repeats} x {args.seconds:g} s, backends interleaved")  # fmt: skip
    report(rows, {s: 4 * (sum(SIZES[s]) + 1) for s in SIZES})


if __name__ == "__main__":
    main()
