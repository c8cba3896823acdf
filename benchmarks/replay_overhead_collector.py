"""Part 1 of ``replay_overhead.py``: the real ``roles.collector.Collector`` with writing on, off, and
acting alone, plus where its time goes (see ``replay_overhead.py`` for what is measured and why)."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import jax
from common import RayStore, ServerProcess, log, median, pct, rotated
from ml_collections import ConfigDict

from deepcrl.buffer import replay_backend
from deepcrl.buffer.async_writer import AsyncSegmentWriter
from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import resolve
from deepcrl.roles.collector import Collector
from deepcrl.rundir.metrics import MetricsLog, read_metrics

# Per-env collector settings: (num_envs, unroll_length). Ant as in the paper (unroll 62); point_mass is
# the cheap env, where writing weighs most against acting.
COLLECTOR_ENVS = {"ant": (64, 62), "point_mass": (128, 50)}
VARIANTS = ["write on", "write off", "acting only"]


class DropSink:
    """The control sink: accepts segment batches and drops them."""

    def write(self, batch) -> int:
        return int(batch["episode_id"].size)

    def flush(self, timeout_s: float | None = None) -> None:
        pass

    def close(self, timeout_s: float | None = None) -> None:
        pass


class TimedSink:
    """Wraps a sink; adds up the wall and CPU time the writer thread spends in ``write`` and ``flush``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.wall_s = 0.0
        self.cpu_s = 0.0

    def _timed(self, fn, *a):
        w, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*a)
        finally:
            self.wall_s += time.perf_counter() - w
            self.cpu_s += time.thread_time() - c

    def write(self, batch) -> int:
        return self._timed(self.inner.write, batch)

    def flush(self, timeout_s: float | None = None) -> None:
        self._timed(self.inner.flush, timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        self._timed(self.inner.close, timeout_s)


class TimedWriter:
    """The Collector's ``AsyncSegmentWriter`` with a clock around ``put`` and ``close`` (the acting
    loop's side of writing); everything else passes through."""

    def __init__(self, inner: AsyncSegmentWriter) -> None:
        self.inner = inner
        self.put_s = self.close_s = 0.0

    def put(self, segment) -> None:
        t = time.perf_counter()
        try:
            self.inner.put(segment)
        finally:
            self.put_s += time.perf_counter() - t

    def close(self) -> None:
        t = time.perf_counter()
        try:
            self.inner.close()
        finally:
            self.close_s += time.perf_counter() - t

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def collector_config(env: str, num_envs: int, unroll: int, depth: int, width: int, backend: str) -> ConfigDict:
    """The collector's config; the huge total_env_steps only makes the Collector log once per run (its
    logging period is fixed at construction), as in a long run; each run sets its own length."""
    c = get_config()
    episode = {"ant": 1000, "point_mass": 50}.get(env, 1000)
    c.update(
        topology="actor_learner", env=env, num_envs=num_envs, unroll_length=unroll, actor_depth=depth,
        actor_width=width, critic_depth=depth, critic_width=width, rate_limit="unlimited",
        min_replay_steps_per_env=max(episode, 200), replay_steps_per_env=max(4 * episode, 2000),
        total_env_steps=10**12, num_evals=1, checkpoint=False, params_fetch_every=1, replay_backend=backend,
    )  # fmt: skip
    return c


class CollectorBench:
    """One real Collector (one compiled unroll) measured with writing on, off, and acting alone.

    ``Collector.run`` closes its writer at the end, so every repetition hands the same Collector a
    fresh ``AsyncSegmentWriter`` (around a ``SegmentWriter`` with the arguments of the one the
    Collector built, or around the drop sink) and a fresh metrics log; the compiled unroll is reused.
    """

    def __init__(self, env: str, args: argparse.Namespace, workdir: Path, backend: str = "reverb") -> None:
        self.env_name, self.backend = f"{env} ({backend})", backend
        num_envs, unroll = COLLECTOR_ENVS[env]
        num_envs = args.num_envs or num_envs
        experiment = resolve(collector_config(env, num_envs, unroll, args.depth, args.width, backend))
        self.server = ServerProcess(experiment.replay) if backend == "reverb" else RayStore(experiment.replay)
        self.workdir = workdir
        log(f"collector {env}: {backend} server at {self.server.address}; building the Collector")
        t = time.perf_counter()
        # Fixed parameters: the learner "has" version 0, the version the Collector starts with, so every
        # fetch answers (0, None): keep acting with the parameters you hold.
        self.col = col = Collector(
            experiment, self.server.address, str(workdir), lambda have_version: (0, None)
        )
        self.construct_s = time.perf_counter() - t
        col.config = ConfigDict(col.config)  # a copy whose total_env_steps each run sets
        ref = col.writer.writer  # the SegmentWriter the Collector built: re-armed with its arguments
        self._writer_args = {"tables": ref.tables, "max_in_flight_items": ref.max_in_flight_items}
        self.N, self.U, self.L = num_envs, unroll, col.layout.segment_length
        self.steps_per_unroll = num_envs * unroll
        self._reps = 0
        t = time.perf_counter()  # warm-up: compiles the unroll and the reset, opens the stream, first write
        self._run(math.ceil(self.L / self.U), self._real_sink())
        self.warmup_s = time.perf_counter() - t
        self._calibrate(args.seconds)

    def _calibrate(self, seconds: float) -> None:
        """Repetition length from acting alone. Each run starts a fresh SegmentAssembler, so a run writes
        whole segment batches only; it stops about half a batch period after the last write, so that its
        cost overlaps acting as in a long run instead of being waited for in close(); overheads are then
        scaled by collected / written steps."""
        rate = self._act(3)["rate"]
        target = max(1, round(seconds * rate / self.steps_per_unroll))
        writes = max(1, round(target * self.U / self.L))
        self.n_unrolls = max(2, math.ceil(writes * self.L / self.U) + (self.L // self.U) // 2)
        self.writes_per_rep = self.n_unrolls * self.U // self.L
        self.collected_per_written = self.n_unrolls * self.U / (self.writes_per_rep * self.L)
        log(
            f"collector {self.env_name}: construct {self.construct_s:.0f} s, warm-up {self.warmup_s:.0f} s, "
            f"~{rate:,.0f} steps/s acting; {self.n_unrolls} unrolls/rep ({self.writes_per_rep} writes)"
        )

    def _real_sink(self):
        return replay_backend.load(self.backend).SegmentWriter(self.server.address, self.col.spec, **self._writer_args)

    def _run(self, unrolls: int, sink, timed: bool = False) -> tuple[dict, Path]:
        """``Collector.run`` for ``unrolls`` more unrolls, writing through ``sink``."""
        self._reps += 1
        folder = self.workdir / "collector" / f"rep{self._reps}"
        writer = AsyncSegmentWriter(sink, queue_size=self.col.config.writer_queue)
        self.col.writer = TimedWriter(writer) if timed else writer
        self.col.log = MetricsLog(folder)
        self.col.until_env_steps = self.col.env_steps + unrolls * self.steps_per_unroll
        return self.col.run(), folder

    def _cpu(self) -> tuple[float, float]:
        return time.process_time(), self.server.cpu_s()

    def _per_kstep(self, seconds: float, steps: int) -> float:
        return 1e6 * seconds / steps  # ms per 1,000 env steps

    def _figures(self, steps: int, wall: float, acting_rate: float, cpu: tuple, stats: dict) -> dict:
        (cpu0, srv0), (cpu1, srv1) = cpu
        return {
            "rate": steps / wall,
            "acting_rate": acting_rate,
            "proc_cpu": self._per_kstep(cpu1 - cpu0, steps),
            "server_cpu": self._per_kstep(srv1 - srv0, steps),
            "blocked_s": stats.get("writer_blocked_s", 0.0),
            "segments": stats.get("segments_written", 0),
            "cpu_total": self._per_kstep(cpu1 - cpu0 + srv1 - srv0, steps),
        }

    def run_collector(self, write: bool) -> dict:
        before = self._cpu()
        stats, folder = self._run(self.n_unrolls, self._real_sink() if write else DropSink())
        after = self._cpu()
        acting_rate = float(read_metrics(folder / "metrics.jsonl")[-1]["acting_env_steps_per_s"])
        steps = self.n_unrolls * self.steps_per_unroll
        return self._figures(steps, stats["wall_time"], acting_rate, (before, after), stats)

    def _act(self, n: int | None = None) -> dict:
        """The Collector's jitted unroll alone, waited for once per unroll as the Collector does (its
        ``device_get``); like ``Collector.run``, the eager reset falls inside the CPU window."""
        col, n = self.col, n or self.n_unrolls
        before = self._cpu()
        k_reset, col.key = jax.random.split(col.key)
        env_state = jax.block_until_ready(col.venv.reset(k_reset))
        start = time.perf_counter()
        for _ in range(n):
            col.key, k = jax.random.split(col.key)
            env_state, _steps, _metrics, col.coverage = col.act_unroll(col.actor, env_state, col.coverage, k)
            jax.block_until_ready(env_state)
        wall = time.perf_counter() - start
        steps = n * self.steps_per_unroll
        return self._figures(steps, wall, steps / wall, (before, self._cpu()), {})

    def run_variant(self, name: str) -> dict:
        if name == "acting only":
            return self._act()
        return self.run_collector(write=name == "write on")

    def instrumented(self, write: bool) -> dict:
        """``Collector.run`` itself with clocks around its unroll (waited for), its writer's ``put`` and
        ``close`` and the writer thread's ``write``; ``device_get`` = the Collector's own acting time
        minus the unroll; the rest (segment assembly, the per-step record, logging) is what remains."""
        col, acted = self.col, {"s": 0.0}
        unroll = col.act_unroll

        def timed_unroll(*a):
            t = time.perf_counter()
            out = jax.block_until_ready(unroll(*a))
            acted["s"] += time.perf_counter() - t
            return out

        col.act_unroll, sink = timed_unroll, TimedSink(self._real_sink() if write else DropSink())
        try:
            before, main0 = self._cpu(), time.thread_time()
            stats, folder = self._run(self.n_unrolls, sink, timed=True)
            main_cpu, after = time.thread_time() - main0, self._cpu()
        finally:
            col.act_unroll = unroll
        steps = self.n_unrolls * self.steps_per_unroll
        acting_s = steps / float(read_metrics(folder / "metrics.jsonl")[-1]["acting_env_steps_per_s"])
        writer, wall = col.writer, stats["wall_time"]
        parts = {
            "act": acted["s"],
            "device_get": acting_s - acted["s"],
            "put": writer.put_s,
            "close": writer.close_s,
        }
        parts["other"] = wall - sum(parts.values())
        out = {k: self._per_kstep(v, steps) for k, v in parts.items()}
        out.update(
            total=self._per_kstep(wall, steps),
            writer_wall=self._per_kstep(sink.wall_s, steps),
            writer_cpu=self._per_kstep(sink.cpu_s, steps),
            main_cpu=self._per_kstep(main_cpu, steps),
            proc_cpu=self._per_kstep(after[0] - before[0], steps),
            server_cpu=self._per_kstep(after[1] - before[1], steps),
        )
        return out

    def close(self) -> None:
        self.server.close()


def _measure(bench: CollectorBench, env: str, args: argparse.Namespace) -> tuple[dict, dict]:
    """Interleaved repetitions of the three variants, then of the instrumented run (on / off)."""
    reps: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    breakdown: dict[str, list[dict]] = {"write on": [], "write off": []}
    for i in range(args.repeats):
        for v in rotated(VARIANTS, i):
            reps[v].append(bench.run_variant(v))
            log(
                f"collector {env} rep {i + 1}/{args.repeats} {v:<11}: {reps[v][-1]['rate']:>10,.0f} env steps/s"
            )
    for i in range(args.breakdown_repeats):
        for v in rotated(["write on", "write off"], i):
            breakdown[v].append(bench.instrumented(write=v == "write on"))
            log(f"collector {env} breakdown rep {i + 1} {v}: {breakdown[v][-1]['total']:.1f} ms/1k steps")
    return reps, breakdown


def bench_collector(env: str, args: argparse.Namespace, workdir: Path, backend: str = "reverb") -> dict:
    bench = CollectorBench(env, args, workdir, backend)
    try:
        reps, breakdown = _measure(bench, bench.env_name, args)
    finally:
        bench.close()
    on, off, act = (reps[v] for v in VARIANTS)
    scale = bench.collected_per_written  # steady state: every collected step is written once
    overhead = [scale * (o["rate"] / w["rate"] - 1) for w, o in zip(on, off, strict=True)]
    cpu_overhead = [scale * (w["cpu_total"] / o["cpu_total"] - 1) for w, o in zip(on, off, strict=True)]
    host_overhead = [a["rate"] / o["rate"] - 1 for o, a in zip(off, act, strict=True)]
    host_cpu_overhead = [o["cpu_total"] / a["cpu_total"] - 1 for o, a in zip(off, act, strict=True)]
    medians = lambda runs: {v: {k: median([r[k] for r in rs]) for k in rs[0]} for v, rs in runs.items() if rs}
    return {
        "env": bench.env_name, "backend": backend, "num_envs": bench.N, "unroll_length": bench.U, "segment_length": bench.L,
        "unrolls_per_rep": bench.n_unrolls, "writes_per_rep": bench.writes_per_rep,
        "construct_s": bench.construct_s, "warmup_s": bench.warmup_s, "reps": reps, "median": medians(reps),
        "write_overhead": median(overhead), "write_overhead_reps": overhead, "collected_per_written": scale,
        "write_cpu_overhead": median(cpu_overhead), "write_cpu_overhead_reps": cpu_overhead,
        "host_path_overhead": median(host_overhead), "host_path_overhead_reps": host_overhead,
        "host_path_cpu_overhead": median(host_cpu_overhead), "breakdown": medians(breakdown),
    }  # fmt: skip


def print_collector(results: list[dict]) -> None:
    print("\n### Collector: env steps/s, writing on vs off (median of repetitions)\n")
    print("| env | envs x unroll, segment | variant | env steps/s | wall/step vs write off | acting steps/s "
          "(Collector counter) | process CPU | cores busy | server CPU | CPU total vs write off | writer blocked s |")  # fmt: skip
    print("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        off = r["median"]["write off"]
        for v, m in r["median"].items():
            print(
                f"| {r['env']} | {r['num_envs']} x {r['unroll_length']}, L={r['segment_length']} | {v} | "
                f"{m['rate']:,.0f} | {pct(off['rate'] / m['rate'] - 1)} | {m['acting_rate']:,.0f} | "
                f"{m['proc_cpu']:.1f} | {m['proc_cpu'] * m['rate'] / 1e6:.2f} | {m['server_cpu']:.2f} | "
                f"{pct(m['cpu_total'] / off['cpu_total'] - 1)} | {m['blocked_s']:.2f} |"
            )
    print(
        "\n(CPU in ms per 1,000 env steps; process = this process, all threads; server = the Reverb process, or "
        "every process of the Ray backend's Ray (store worker, raylet, GCS); "
        "cores busy = process CPU time / wall time.)\n"
    )
    for r in results:
        reps = ", ".join(pct(x) for x in r["write_overhead_reps"])
        cpu = ", ".join(pct(x) for x in r["write_cpu_overhead_reps"])
        host = ", ".join(pct(x) for x in r["host_path_overhead_reps"])
        print(
            f"- {r['env']}: {r['unrolls_per_rep']} unrolls, {r['writes_per_rep']} segment write(s) per "
            f"repetition (collected/written steps {r['collected_per_written']:.2f}, the scale applied below). "
            f"Writing to {r.get('backend', 'reverb')}, steady state: wall time per env step {pct(r['write_overhead'])} against "
            f"writing off (per repetition: {reps}); CPU time (process + server) {pct(r['write_cpu_overhead'])} "
            f"(per repetition: {cpu}). Host path without writing (device_get, assembly, queue, record) against "
            f"acting only: wall {pct(r['host_path_overhead'])} (per repetition: {host}), CPU "
            f"{pct(r['host_path_cpu_overhead'])}."
        )
    _print_breakdown(results)


def _print_breakdown(results: list[dict]) -> None:
    if not any(r["breakdown"] for r in results):
        return
    print(
        "\n### Collector: where the time goes (Collector.run instrumented, ms per 1,000 env steps, median)\n"
    )
    cols = ["act", "device_get", "put", "close", "other", "total", "writer_wall", "writer_cpu", "main_cpu",
            "proc_cpu", "server_cpu"]  # fmt: skip
    print("| env | variant | acting (unroll) | device_get | put | final flush | assembly, record, log | "
          "loop wall | writer thread in write: wall | ...: CPU | main thread CPU | process CPU | server CPU |")  # fmt: skip
    print("|---|---|" + "--:|" * len(cols))
    for r in results:
        for v, m in r["breakdown"].items():
            print(f"| {r['env']} | {v} | " + " | ".join(f"{m[c]:.2f}" for c in cols) + " |")
