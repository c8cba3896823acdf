"""What the distributed mode costs against the fused ``single`` mode, measured side by side.

    .venv/bin/python benchmarks/replay_overhead.py [--quick] [--json out.json]

Two measurements, printed as markdown tables:

1. Collector. Env steps/s of ``roles.collector.Collector.run`` itself, constructed with a
   ``fetch_params`` that always answers "no newer parameters", in three variants:
     - ``write on``: segments go through the real ``AsyncSegmentWriter`` + ``SegmentWriter`` (the ones
       the Collector builds) to a real Reverb server running in its own process, as in the distributed
       mode (rate_limit unlimited: nothing samples, so a ratio limiter would stall the writer);
     - ``write off``: the same Collector, its writer wrapping a sink that drops the batches (the control:
       acting, host copy and segment assembly are still paid);
     - ``acting only``: the Collector's jitted unroll alone, waited for once per unroll as the Collector
       does, with no host copy, assembly or writer: acting as the fused loop pays it.
   ``Collector.run`` closes its writer at the end, so every repetition hands the same Collector object a
   fresh ``AsyncSegmentWriter`` (around a ``SegmentWriter`` with the arguments of the one the Collector
   built, or around the drop sink) and a fresh metrics log; the compiled unroll is reused.
   A second, instrumented copy of the Collector's loop body (write on / off) says where the time goes:
   acting, ``device_get``, ``SegmentAssembler.add``, ``put``, the final flush, the writer thread's wall
   and CPU time inside ``write``, and the CPU time of this process and of the server process.
2. Learner. Updates/s of the Learner's own loop body (``Learner.run`` minus evaluation and logging:
   ``SegmentSampler.sample`` -> ``jnp.asarray`` -> the Learner's jitted relabel + ``update_many`` ->
   publish the actor with ``device_get``), against the fused loop's data source (``sample_segments``
   from a prefilled on-device ``TrajectoryBuffer`` -> the same relabel + ``update_many``, one jitted call
   per round, synchronised only at the end), at the same depth, width, batch and minibatches, after
   compile. Table and buffer hold the same synthetic data (timing does not depend on its values).

The machine is shared and noisy: variants are interleaved within each repetition (their order rotated),
and the tables give medians over repetitions, ratios as the median of the per-repetition ratios. Besides
wall time, every variant reports the CPU time of this process (all threads) and of the server process per
env step or per round: on a box shared with other jobs, wall time swings by tens of percent between
repetitions while CPU time per step moves by a few percent, so CPU ratios are the steadier estimate of
the cost (they equal the wall-time cost where the cores are saturated).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Per-env collector settings: (num_envs, unroll_length). Ant as in the paper (unroll 62); point_mass is
# the cheap env, where writing weighs most against acting.
COLLECTOR_ENVS = {"ant": (64, 62), "point_mass": (128, 50)}


# ------------------------------------------------------------------------------------------- helpers


def _serve(spec, conn, stop) -> None:
    """Body of the server process: start Reverb, send the address, wait for the stop event."""
    from deepcrl.buffer.reverb_replay import start_server

    server, address = start_server(spec)
    conn.send(address)
    stop.wait()
    server.stop()


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """A Reverb server in a spawned process of its own, as in the distributed mode."""

    def __init__(self, spec) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_serve, args=(spec, child, self._stop), daemon=True)
        self._proc.start()
        if not parent.poll(180):
            self.close()
            raise RuntimeError("the Reverb server process did not report an address within 180 s")
        self.address = parent.recv()

    def cpu_s(self) -> float:
        return _proc_cpu_s(self._proc.pid)

    def close(self) -> None:
        self._stop.set()
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(10)


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


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _rotated(items: list[str], i: int) -> list[str]:
    k = i % len(items)
    return items[k:] + items[:k]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- collector


def _collector_config(env: str, num_envs: int, unroll: int, depth: int, width: int):
    """The collector's config; total_env_steps is set per run, the huge value here only makes the Collector
    log once per run (its logging period is fixed at construction), as in a long run."""
    from deepcrl.configs.defaults import get_config

    c = get_config()
    episode = {"ant": 1000, "point_mass": 50}.get(env, 1000)
    c.update(
        topology="actor_learner", env=env, num_envs=num_envs, unroll_length=unroll, actor_depth=depth,
        actor_width=width, critic_depth=depth, critic_width=width, rate_limit="unlimited",
        min_replay_steps_per_env=max(episode, 200), replay_steps_per_env=max(4 * episode, 2000),
        total_env_steps=10**12, num_evals=1, checkpoint=False, params_fetch_every=1,
    )  # fmt: skip
    return c


class CollectorBench:
    """One Collector (one compiled unroll) measured with writing on, off, and acting alone."""

    def __init__(self, env: str, args: argparse.Namespace, workdir: Path) -> None:
        import jax

        from deepcrl.configs.resolve import build_env, replay_spec, validate
        from deepcrl.roles.collector import Collector

        self.env_name = env
        num_envs, unroll = COLLECTOR_ENVS[env]
        num_envs = args.num_envs or num_envs
        self.config = config = _collector_config(env, num_envs, unroll, args.depth, args.width)
        spec_env = build_env(config)
        spec = replay_spec(config, spec_env, validate(config, spec_env), ["collector"])
        self.server = ServerProcess(spec)
        self.workdir = workdir
        _log(f"collector {env}: server at {self.server.address}; building the Collector")
        t = time.perf_counter()
        # Fixed parameters: the learner "has" version 0, the version the Collector starts with, so every
        # fetch answers (0, None): keep acting with the parameters you hold.
        self.col = col = Collector(
            config.to_dict(), ["collector"], self.server.address, str(workdir), lambda have_version: (0, None)
        )
        self.construct_s = time.perf_counter() - t
        ref = col.writer.writer  # the SegmentWriter the Collector built: re-armed with its arguments
        self._writer_args = {"tables": ref.tables, "max_in_flight_items": ref.max_in_flight_items}
        self.N, self.U, self.L = num_envs, unroll, col.layout.segment_length
        self.steps_per_unroll = num_envs * unroll
        self._reps = 0
        self._jax = jax

        # Warm-up: one real run (compiles the unroll, the eager reset, opens the stream, first write).
        t = time.perf_counter()
        self._set_unrolls(math.ceil(self.L / self.U))
        col.run()
        self.warmup_s = time.perf_counter() - t
        # Calibrate the repetition length from acting alone.
        rate = self._act(3)["rate"]
        target = max(1, round(args.seconds * rate / self.steps_per_unroll))
        writes = max(1, round(target * self.U / self.L))
        # Each run starts a fresh SegmentAssembler, so a run writes whole segment batches only. Stop about
        # half a batch period after the last write, so that its cost overlaps acting as in a long run
        # instead of being waited for in close(); overheads are then scaled by collected / written steps.
        self.n_unrolls = max(2, math.ceil(writes * self.L / self.U) + (self.L // self.U) // 2)
        self.writes_per_rep = self.n_unrolls * self.U // self.L
        self.collected_per_written = self.n_unrolls * self.U / (self.writes_per_rep * self.L)
        _log(
            f"collector {env}: construct {self.construct_s:.0f} s, warm-up {self.warmup_s:.0f} s, "
            f"~{rate:,.0f} steps/s acting; {self.n_unrolls} unrolls/rep ({self.writes_per_rep} writes)"
        )

    # -- pieces

    def _set_unrolls(self, n: int) -> None:
        self.col.config.total_env_steps = n * self.steps_per_unroll

    def _rearm(self, sink) -> Path:
        from deepcrl.buffer.reverb_writer import AsyncSegmentWriter
        from deepcrl.rundir.metrics import MetricsLog

        self._reps += 1
        folder = self.workdir / "collector" / f"rep{self._reps}"
        self.col.writer = AsyncSegmentWriter(sink, queue_size=self.col.config.writer_queue)
        self.col.log = MetricsLog(folder)
        return folder

    def _real_sink(self):
        from deepcrl.buffer.reverb_writer import SegmentWriter

        return SegmentWriter(self.server.address, self.col.spec, **self._writer_args)

    def _cpu(self) -> tuple[float, float]:
        return time.process_time(), self.server.cpu_s()

    def _per_kstep(self, seconds: float, steps: int) -> float:
        return 1e6 * seconds / steps  # ms per 1,000 env steps

    # -- variants

    def run_collector(self, write: bool) -> dict:
        from deepcrl.rundir.metrics import read_metrics

        self._set_unrolls(self.n_unrolls)
        folder = self._rearm(self._real_sink() if write else DropSink())
        cpu0, srv0 = self._cpu()
        stats = self.col.run()
        cpu1, srv1 = self._cpu()
        last = read_metrics(folder / "metrics.jsonl")[-1]
        steps = stats["env_steps"]
        return {
            "rate": steps / stats["wall_time"],
            "acting_rate": float(last["acting_env_steps_per_s"]),
            "proc_cpu": self._per_kstep(cpu1 - cpu0, steps),
            "server_cpu": self._per_kstep(srv1 - srv0, steps),
            "blocked_s": stats["writer_blocked_s"],
            "segments": stats["segments_written"],
            "cpu_total": self._per_kstep(cpu1 - cpu0 + srv1 - srv0, steps),
        }

    def _act(self, n: int | None = None) -> dict:
        jax, col = self._jax, self.col
        n = n or self.n_unrolls
        # Collector.run resets the envs (eagerly) before its clock starts but inside the CPU window the
        # other variants are measured over; the same here, so that CPU totals compare like with like.
        cpu0, srv0 = self._cpu()
        k_reset, col.key = jax.random.split(col.key)
        env_state = col.venv.reset(k_reset)
        jax.block_until_ready(env_state)
        start = time.perf_counter()
        for _ in range(n):
            col.key, k = jax.random.split(col.key)
            env_state, _steps, _metrics, col.coverage = col._unroll(col.actor, env_state, col.coverage, k)
            jax.block_until_ready(env_state)  # the Collector waits once per unroll too (device_get)
        wall = time.perf_counter() - start
        cpu1, srv1 = self._cpu()
        steps = n * self.steps_per_unroll
        return {
            "rate": steps / wall,
            "acting_rate": steps / wall,
            "proc_cpu": self._per_kstep(cpu1 - cpu0, steps),
            "server_cpu": self._per_kstep(srv1 - srv0, steps),
            "blocked_s": 0.0,
            "segments": 0,
            "cpu_total": self._per_kstep(cpu1 - cpu0 + srv1 - srv0, steps),
        }

    def run_variant(self, name: str) -> dict:
        if name == "acting only":
            return self._act()
        return self.run_collector(write=name == "write on")

    def instrumented(self, write: bool) -> dict:
        """The Collector's loop body with a clock around each phase (same objects, same order)."""
        from deepcrl.buffer.reverb_writer import AsyncSegmentWriter
        from deepcrl.collector.segments import SegmentAssembler

        jax, col = self._jax, self.col
        sink = TimedSink(self._real_sink() if write else DropSink())
        writer = AsyncSegmentWriter(sink, queue_size=col.config.writer_queue)
        assembler = SegmentAssembler(self.L)
        k_reset, col.key = jax.random.split(col.key)
        env_state = col.venv.reset(k_reset)
        jax.block_until_ready(env_state)
        t = dict.fromkeys(("act", "device_get", "assemble", "put", "close"), 0.0)
        cpu0, srv0 = self._cpu()
        main0 = time.thread_time()
        start = time.perf_counter()
        for _ in range(self.n_unrolls):
            col.fetch_params(col.version)
            t0 = time.perf_counter()
            col.key, k = jax.random.split(col.key)
            env_state, steps, metrics, col.coverage = col._unroll(col.actor, env_state, col.coverage, k)
            jax.block_until_ready(steps)
            t1 = time.perf_counter()
            steps = jax.device_get(steps)
            t2 = time.perf_counter()
            segments = assembler.add(steps)
            t3 = time.perf_counter()
            for segment in segments:
                writer.put(segment)
            t4 = time.perf_counter()
            float(metrics["success"].mean())
            t["act"] += t1 - t0
            t["device_get"] += t2 - t1
            t["assemble"] += t3 - t2
            t["put"] += t4 - t3
        t5 = time.perf_counter()
        writer.close()
        end = time.perf_counter()
        t["close"] = end - t5
        main_cpu = time.thread_time() - main0
        cpu1, srv1 = self._cpu()
        steps = self.n_unrolls * self.steps_per_unroll
        out = {k: self._per_kstep(v, steps) for k, v in t.items()}
        out.update(
            total=self._per_kstep(end - start, steps),
            writer_wall=self._per_kstep(sink.wall_s, steps),
            writer_cpu=self._per_kstep(sink.cpu_s, steps),
            main_cpu=self._per_kstep(main_cpu, steps),
            proc_cpu=self._per_kstep(cpu1 - cpu0, steps),
            server_cpu=self._per_kstep(srv1 - srv0, steps),
        )
        return out

    def close(self) -> None:
        self.server.close()


def bench_collector(env: str, args: argparse.Namespace, workdir: Path) -> dict:
    bench = CollectorBench(env, args, workdir)
    variants = ["write on", "write off", "acting only"]
    reps: dict[str, list[dict]] = {v: [] for v in variants}
    breakdown: dict[str, list[dict]] = {"write on": [], "write off": []}
    try:
        for i in range(args.repeats):
            for v in _rotated(variants, i):
                r = bench.run_variant(v)
                reps[v].append(r)
                _log(f"collector {env} rep {i + 1}/{args.repeats} {v:<11}: {r['rate']:>10,.0f} env steps/s")
        for i in range(args.breakdown_repeats):
            for v in _rotated(["write on", "write off"], i):
                breakdown[v].append(bench.instrumented(write=v == "write on"))
                _log(
                    f"collector {env} breakdown rep {i + 1} {v}: {breakdown[v][-1]['total']:.1f} ms/1k steps"
                )
    finally:
        bench.close()
    on, off, act = (reps[v] for v in variants)
    scale = bench.collected_per_written  # steady state: every collected step is written once
    overhead = [scale * (o["rate"] / w["rate"] - 1) for w, o in zip(on, off, strict=True)]
    cpu_overhead = [scale * (w["cpu_total"] / o["cpu_total"] - 1) for w, o in zip(on, off, strict=True)]
    fetch_overhead = [a["rate"] / o["rate"] - 1 for o, a in zip(off, act, strict=True)]
    fetch_cpu_overhead = [o["cpu_total"] / a["cpu_total"] - 1 for o, a in zip(off, act, strict=True)]
    return {
        "env": env,
        "num_envs": bench.N,
        "unroll_length": bench.U,
        "segment_length": bench.L,
        "unrolls_per_rep": bench.n_unrolls,
        "writes_per_rep": bench.writes_per_rep,
        "construct_s": bench.construct_s,
        "warmup_s": bench.warmup_s,
        "reps": reps,
        "median": {v: {k: _median([r[k] for r in rs]) for k in rs[0]} for v, rs in reps.items()},
        "write_overhead": _median(overhead),
        "write_overhead_reps": overhead,
        "collected_per_written": scale,
        "write_cpu_overhead": _median(cpu_overhead),
        "write_cpu_overhead_reps": cpu_overhead,
        "host_path_overhead": _median(fetch_overhead),
        "host_path_overhead_reps": fetch_overhead,
        "host_path_cpu_overhead": _median(fetch_cpu_overhead),
        "breakdown": {
            v: {k: _median([r[k] for r in rs]) for k in rs[0]} for v, rs in breakdown.items() if rs
        },
    }


# ------------------------------------------------------------------------------------------- learner


def _learner_config(args: argparse.Namespace, depth: int, segment_length: int):
    from deepcrl.configs.defaults import get_config

    c = get_config()
    c.update(
        topology="actor_learner", env=args.learner_env, num_envs=64, unroll_length=62,
        min_replay_steps_per_env=1000, replay_steps_per_env=args.learner_replay_steps_per_env,
        segment_length=segment_length, batch_size=args.batch_size, num_minibatches=args.num_minibatches,
        actor_depth=depth, critic_depth=depth, actor_width=args.width, critic_width=args.width,
        rate_limit="unlimited", checkpoint=False, num_evals=1,
    )  # fmt: skip
    return c


def _synthetic_steps(config, env, episode_length: int) -> dict[str, np.ndarray]:
    """Time-major [C, N, ...] steps with episodes of ``episode_length`` (values do not matter for speed)."""
    rng = np.random.default_rng(0)
    C, N = config.replay_steps_per_env, config.num_envs
    t = np.arange(C, dtype=np.int32)[:, None]
    return {
        "state": rng.standard_normal((C, N, env.spec.state_size), dtype=np.float32),
        "action": rng.uniform(-0.99, 0.99, (C, N, env.action_size)).astype(np.float32),
        "episode_id": np.broadcast_to(t // episode_length, (C, N)).astype(np.int32),
    }


def bench_learner(segment_length: int, args: argparse.Namespace, workdir: Path) -> list[dict]:
    import jax

    from deepcrl.buffer.reverb_replay import table_info
    from deepcrl.buffer.reverb_writer import SegmentWriter
    from deepcrl.buffer.trajectory_buffer import init_buffer, insert
    from deepcrl.configs.resolve import build_env, replay_spec, validate

    base = _learner_config(args, args.depths[0], segment_length)
    env = build_env(base)
    layout = validate(base, env)
    L = layout.segment_length
    spec = replay_spec(base, env, layout, ["learner"])
    data = _synthetic_steps(base, env, layout.episode_length)
    server = ServerProcess(spec)
    results = []
    try:
        # Prefill the table (FIFO capacity = replay_steps_per_env x num_envs steps) and the on-device buffer.
        with SegmentWriter(server.address, spec, max_in_flight_items=32) as w:  # Reverb warns above ~48
            for t0 in range(0, base.replay_steps_per_env - L + 1, L):
                w.write({k: np.swapaxes(v[t0 : t0 + L], 0, 1) for k, v in data.items()})
        items = table_info(server.address)["learner"]["size"]
        buf = jax.jit(insert)(
            init_buffer(base.replay_steps_per_env, base.num_envs, env.spec.state_size, env.action_size), data
        )
        _log(
            f"learner L={L}: table holds {items} segments ({items * L:,} steps), buffer {int(buf.size)} steps/env"
        )
        for depth in args.depths:
            config = _learner_config(args, depth, segment_length)
            results.append(_bench_learner_depth(config, env, layout, server, buf, items, workdir, args))
    finally:
        server.close()
    return results


def _bench_learner_depth(config, env, layout, server, buf, items, workdir, args) -> dict:
    import jax
    import jax.numpy as jnp

    from deepcrl.buffer.relabel import relabeled_minibatches
    from deepcrl.buffer.trajectory_buffer import sample_segments
    from deepcrl.roles.learner import Learner

    depth, L = config.critic_depth, layout.segment_length
    t = time.perf_counter()
    learner = Learner(
        config.to_dict(), "learner", ["learner"], server.address, str(workdir / f"learner_d{depth}_L{L}")
    )
    construct_s = time.perf_counter() - t
    agent, num_segments = learner.agent, learner.segments_per_round
    goal_indices = env.spec.goal_indices

    def fused_round(ts, buffer, key):  # train_step of launch/single.py without the collection
        k_sample, k_relabel, k_update = jax.random.split(key, 3)
        segments = sample_segments(buffer, k_sample, num_segments, L)
        batches = relabeled_minibatches(
            k_relabel, segments, goal_indices, config.gamma, config.num_minibatches, config.batch_size
        )
        return agent.update_many(ts, batches, k_update)

    fused = jax.jit(fused_round, donate_argnums=0)
    state = {"ts": jax.jit(agent.init)(jax.random.PRNGKey(1)), "key": jax.random.PRNGKey(2)}
    acc = {"wait": 0.0, "to_device": 0.0, "dispatch": 0.0, "publish": 0.0}

    def reverb_round() -> None:  # Learner.run's loop body, minus evaluation
        t0 = time.perf_counter()
        batch = learner.sampler.sample()
        t1 = time.perf_counter()
        segments = {k: jnp.asarray(v) for k, v in batch.data.items()}
        t2 = time.perf_counter()
        learner.key, k = jax.random.split(learner.key)
        learner.train_state, _metrics = learner._round(learner.train_state, segments, k)
        learner.rounds += 1
        t3 = time.perf_counter()
        with learner._lock:
            learner._published = (
                learner.rounds * config.num_minibatches,
                jax.device_get(learner.train_state.actor),
            )
        t4 = time.perf_counter()
        acc["wait"] += t1 - t0
        acc["to_device"] += t2 - t1
        acc["dispatch"] += t3 - t2
        acc["publish"] += t4 - t3

    def device_round() -> None:
        state["key"], k = jax.random.split(state["key"])
        state["ts"], _metrics = fused(state["ts"], buf, k)

    def sync_reverb() -> None:
        jax.block_until_ready(learner.train_state)

    def sync_device() -> None:
        jax.block_until_ready(state["ts"])

    compile_s = {}
    for name, step, sync in (("reverb", reverb_round, sync_reverb), ("on-device", device_round, sync_device)):
        t = time.perf_counter()
        step()
        sync()
        compile_s[name] = time.perf_counter() - t
    # Calibrate: one more round of each, after compile.
    t = time.perf_counter()
    device_round()
    sync_device()
    round_s = time.perf_counter() - t
    rounds = max(3, round(args.learner_seconds / max(round_s, 1e-3)))
    _log(
        f"learner depth {depth} L={L}: construct {construct_s:.0f} s, compile {compile_s['reverb']:.0f} s "
        f"(reverb) / {compile_s['on-device']:.0f} s (on-device); {round_s * 1e3:.0f} ms/round -> {rounds} rounds/rep"
    )

    runs = {"reverb": (reverb_round, sync_reverb), "on-device": (device_round, sync_device)}
    reps: dict[str, list[dict]] = {k: [] for k in runs}
    for i in range(args.learner_repeats):
        for name in _rotated(list(runs), i):
            step, sync = runs[name]
            for k in acc:
                acc[k] = 0.0
            sync()
            cpu0, srv0 = time.process_time(), server.cpu_s()
            start = time.perf_counter()
            for _ in range(rounds):
                step()
            sync()
            wall = time.perf_counter() - start
            cpu1, srv1 = time.process_time(), server.cpu_s()
            r = {
                "updates_per_s": rounds * config.num_minibatches / wall,
                "ms_per_round": 1e3 * wall / rounds,
                "proc_cpu_ms_per_round": 1e3 * (cpu1 - cpu0) / rounds,
                "server_cpu_ms_per_round": 1e3 * (srv1 - srv0) / rounds,
            }
            if name == "reverb":
                r.update({f"{k}_ms_per_round": 1e3 * v / rounds for k, v in acc.items()})
            reps[name].append(r)
            _log(
                f"learner depth {depth} L={L} rep {i + 1}/{args.learner_repeats} {name:<9}: {r['updates_per_s']:,.1f} updates/s"
            )
    learner.sampler.close()
    learner.log.close()
    pairs = list(zip(reps["reverb"], reps["on-device"], strict=True))
    ratios = [r["updates_per_s"] / d["updates_per_s"] for r, d in pairs]
    cpu = lambda x: x["proc_cpu_ms_per_round"] + x["server_cpu_ms_per_round"]
    cpu_ratios = [cpu(r) / cpu(d) for r, d in pairs]
    return {
        "depth": depth,
        "width": config.critic_width,
        "batch_size": config.batch_size,
        "num_minibatches": config.num_minibatches,
        "segment_length": L,
        "segments_per_round": num_segments,
        "table_segments": items,
        "rounds_per_rep": rounds,
        "construct_s": construct_s,
        "compile_s": compile_s,
        "reps": reps,
        "median": {n: {k: _median([r[k] for r in rs]) for k in rs[0]} for n, rs in reps.items()},
        "ratio": _median(ratios),
        "ratio_reps": ratios,
        "cpu_ratio": _median(cpu_ratios),
        "cpu_ratio_reps": cpu_ratios,
    }


# ------------------------------------------------------------------------------------------- report


def _machine() -> dict:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("jax", "dm-reverb", "brax"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "?"
    return {"cpu": model, "nproc": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), **versions}


def _pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


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
                f"{m['rate']:,.0f} | {_pct(off['rate'] / m['rate'] - 1)} | {m['acting_rate']:,.0f} | "
                f"{m['proc_cpu']:.1f} | {m['proc_cpu'] * m['rate'] / 1e6:.2f} | {m['server_cpu']:.2f} | {_pct(m['cpu_total'] / off['cpu_total'] - 1)} | "
                f"{m['blocked_s']:.2f} |"
            )
    print(
        "\n(CPU in ms per 1,000 env steps; process = this process, all threads; server = the Reverb process; "
        "cores busy = process CPU time / wall time.)\n"
    )
    for r in results:
        reps = ", ".join(_pct(x) for x in r["write_overhead_reps"])
        cpu = ", ".join(_pct(x) for x in r["write_cpu_overhead_reps"])
        host = ", ".join(_pct(x) for x in r["host_path_overhead_reps"])
        print(
            f"- {r['env']}: {r['unrolls_per_rep']} unrolls, {r['writes_per_rep']} segment write(s) per "
            f"repetition (collected/written steps {r['collected_per_written']:.2f}, the scale applied below). "
            f"Writing to Reverb, steady state: wall time per env step {_pct(r['write_overhead'])} against "
            f"writing off (per repetition: {reps}); CPU time (process + server) {_pct(r['write_cpu_overhead'])} "
            f"(per repetition: {cpu}). Host path without writing (device_get, assembly, queue) against acting "
            f"only: wall {_pct(r['host_path_overhead'])} (per repetition: {host}), CPU "
            f"{_pct(r['host_path_cpu_overhead'])}."
        )
    if not any(r["breakdown"] for r in results):
        return
    print(
        "\n### Collector: where the time goes (instrumented copy of the loop body, ms per 1,000 env steps "
        "collected, median)\n"
    )
    cols = ["act", "device_get", "assemble", "put", "close", "total", "writer_wall", "writer_cpu", "main_cpu",
            "proc_cpu", "server_cpu"]  # fmt: skip
    print("| env | variant | acting (unroll) | device_get | assemble | put | final flush | loop wall | "
          "writer thread in write: wall | ...: CPU | main thread CPU | process CPU | server CPU |")  # fmt: skip
    print("|---|---|" + "--:|" * len(cols))
    for r in results:
        for v, m in r["breakdown"].items():
            print(f"| {r['env']} | {v} | " + " | ".join(f"{m[c]:.2f}" for c in cols) + " |")


def print_learner(results: list[dict]) -> None:
    print("\n### Learner: updates/s fed from Reverb vs from the on-device buffer (median of repetitions)\n")
    print("| depth | width | batch x minibatches | segment L, segments/round | source | updates/s | ms/round | "
          "reverb / on-device | process CPU ms/round | server CPU ms/round | first call s (compile) |")  # fmt: skip
    print("|--:|--:|---|---|---|--:|--:|--:|--:|--:|--:|")
    for r in results:
        for src, m in r["median"].items():
            ratio = f"{r['ratio']:.3f}" if src == "reverb" else ""
            print(
                f"| {r['depth']} | {r['width']} | {r['batch_size']} x {r['num_minibatches']} | "
                f"{r['segment_length']}, {r['segments_per_round']} | {src} | {m['updates_per_s']:,.1f} | "
                f"{m['ms_per_round']:.1f} | {ratio} | {m['proc_cpu_ms_per_round']:.1f} | "
                f"{m['server_cpu_ms_per_round']:.2f} | {r['compile_s'][src]:.1f} |"
            )
    print("\nReverb loop, ms per round (median): sample wait | jnp.asarray | dispatch | publish (device_get of "
          "the actor; waits for the round to finish)\n")  # fmt: skip
    for r in results:
        m = r["median"]["reverb"]
        ratios = ", ".join(f"{x:.3f}" for x in r["ratio_reps"])
        print(
            f"- depth {r['depth']}, L={r['segment_length']}: {m['wait_ms_per_round']:.2f} | "
            f"{m['to_device_ms_per_round']:.2f} | {m['dispatch_ms_per_round']:.2f} | "
            f"{m['publish_ms_per_round']:.1f}; reverb/on-device updates/s per repetition: {ratios}; CPU per "
            f"round (process + server) reverb/on-device: {r['cpu_ratio']:.3f} (median)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="short check: 2 repetitions, depth 4 only, short runs"
    )
    p.add_argument("--parts", nargs="+", default=["collector", "learner"], choices=["collector", "learner"])
    p.add_argument("--envs", nargs="+", default=list(COLLECTOR_ENVS), choices=list(COLLECTOR_ENVS))
    p.add_argument("--num_envs", type=int, default=0, help="collector envs; 0: 64 (ant), 128 (point_mass)")
    p.add_argument("--depth", type=int, default=4, help="collector policy depth")
    p.add_argument("--width", type=int, default=256, help="network width (collector and learner)")
    p.add_argument("--seconds", type=float, default=6.0, help="target length of a collector repetition")
    p.add_argument("--repeats", type=int, default=5, help="interleaved collector repetitions per variant")
    p.add_argument(
        "--learner_repeats", type=int, default=4, help="interleaved learner repetitions per source"
    )
    p.add_argument("--breakdown_repeats", type=int, default=2, help="instrumented collector repetitions")
    p.add_argument("--depths", type=int, nargs="+", default=[4, 16], help="learner depths (actor = critic)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--num_minibatches", type=int, default=16, help="SGD steps per learner round")
    p.add_argument("--learner_env", default="ant")
    p.add_argument(
        "--learner_segment_lengths", type=int, nargs="+", default=[0], help="0: the episode length"
    )
    p.add_argument(
        "--learner_replay_steps_per_env", type=int, default=4000, help="x 64 envs = prefilled steps"
    )
    p.add_argument("--learner_seconds", type=float, default=6.0, help="target length of a learner repetition")
    p.add_argument("--json", default="", help="also write all raw figures here")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.learner_repeats, args.breakdown_repeats = 2, 2, 1
        args.seconds, args.learner_seconds = min(args.seconds, 3.0), min(args.learner_seconds, 3.0)
        args.depths = args.depths[:1]

    start = time.perf_counter()
    machine = _machine()
    load0 = os.getloadavg()
    out: dict[str, Any] = {"machine": machine, "args": vars(args), "collector": [], "learner": []}
    with tempfile.TemporaryDirectory(prefix="replay_overhead_") as tmp:
        workdir = Path(tmp)
        if "collector" in args.parts:
            for env in args.envs:
                out["collector"].append(bench_collector(env, args, workdir / env))
        if "learner" in args.parts:
            for seg in args.learner_segment_lengths:
                out["learner"] += bench_learner(seg, args, workdir / f"learner_L{seg}")
    out["load_avg"] = {"start": load0, "end": os.getloadavg()}
    out["wall_s"] = time.perf_counter() - start

    print(
        f"\nMachine: {machine['cpu']}, {machine['nproc']} CPU cores; jax {machine['jax']}, dm-reverb "
        f"{machine['dm-reverb']}, brax {machine['brax']}; {machine['date']}; load average "
        f"{load0[0]:.1f} at start, {out['load_avg']['end'][0]:.1f} at end; total {out['wall_s'] / 60:.1f} min"
    )
    print(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    if out["collector"]:
        print_collector(out["collector"])
    if out["learner"]:
        print_learner(out["learner"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
