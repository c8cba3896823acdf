"""Part 2 of ``replay_overhead.py``: the real ``roles.learner.Learner``'s training round fed from
Reverb against the fused loop's on-device data source (see ``replay_overhead.py``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from common import ServerProcess, log, median, rotated
from ml_collections import ConfigDict

from deepcrl.buffer.relabel import relabeled_minibatches
from deepcrl.buffer.reverb_replay import table_info
from deepcrl.buffer.reverb_writer import SegmentWriter
from deepcrl.buffer.trajectory_buffer import init_buffer, insert, sample_segments
from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import Experiment, resolve
from deepcrl.learner.agent import make_agent
from deepcrl.roles.learner import Learner


def learner_config(args: argparse.Namespace, depth: int, segment_length: int) -> ConfigDict:
    c = get_config()
    c.update(
        topology="actor_learner", env=args.learner_env, num_envs=64, unroll_length=62,
        min_replay_steps_per_env=1000, replay_steps_per_env=args.learner_replay_steps_per_env,
        segment_length=segment_length, batch_size=args.batch_size, num_minibatches=args.num_minibatches,
        actor_depth=depth, critic_depth=depth, actor_width=args.width, critic_width=args.width,
        rate_limit="unlimited", checkpoint=False, num_evals=1,
    )  # fmt: skip
    return c


def _synthetic_steps(experiment: Experiment) -> dict[str, np.ndarray]:
    """Time-major [C, N, ...] steps with the run's episode length (values do not matter for speed)."""
    rng = np.random.default_rng(0)
    config, env = experiment.config, experiment.env()
    C, N = config.replay_steps_per_env, config.num_envs
    t = np.arange(C, dtype=np.int32)[:, None]
    return {
        "state": rng.standard_normal((C, N, env.spec.state_size), dtype=np.float32),
        "action": rng.uniform(-0.99, 0.99, (C, N, env.action_size)).astype(np.float32),
        "episode_id": np.broadcast_to(t // experiment.layout.episode_length, (C, N)).astype(np.int32),
    }


def bench_learner(segment_length: int, args: argparse.Namespace, workdir: Path) -> list[dict]:
    """Prefill one Reverb table (FIFO capacity = replay_steps_per_env x num_envs steps) and one
    on-device buffer with the same data, then measure each depth against both."""
    base = resolve(learner_config(args, args.depths[0], segment_length))
    L, config, env = base.layout.segment_length, base.config, base.env()
    data = _synthetic_steps(base)
    server = ServerProcess(base.replay)
    results = []
    try:
        with SegmentWriter(
            server.address, base.replay, max_in_flight_items=32
        ) as w:  # Reverb warns above ~48
            for t0 in range(0, config.replay_steps_per_env - L + 1, L):
                w.write({k: np.swapaxes(v[t0 : t0 + L], 0, 1) for k, v in data.items()})
        items = table_info(server.address)[base.learner_names[0]]["size"]
        empty = init_buffer(
            config.replay_steps_per_env, config.num_envs, env.spec.state_size, env.action_size
        )
        buf = jax.jit(insert)(empty, data)
        log(
            f"learner L={L}: table holds {items} segments ({items * L:,} steps), buffer {int(buf.size)} steps/env"
        )
        for depth in args.depths:
            experiment = resolve(learner_config(args, depth, segment_length))
            results.append(_bench_learner_depth(experiment, server, buf, items, workdir, args))
    finally:
        server.close()
    return results


class LearnerRounds:
    """The two data sources at one depth: ``Learner.train_round`` (sample from Reverb, to device,
    relabel + updates, publish the actor), with clocks around its sampling and its jitted update,
    and the fused loop's round (``sample_segments`` from the on-device buffer, the same relabel and
    updates, one jitted call, synchronised only at the end)."""

    def __init__(self, experiment: Experiment, server: ServerProcess, buf, workdir: Path) -> None:
        config, layout = experiment.config, experiment.layout
        name = experiment.learner_names[0]
        t = time.perf_counter()
        self.learner = learner = Learner(experiment, name, server.address, str(workdir))
        self.construct_s = time.perf_counter() - t
        self.acc = {"wait": 0.0, "dispatch": 0.0}
        sample, update = learner.sampler.sample, learner.update_round
        learner.sampler.sample = lambda **kw: self._timed("wait", sample, **kw)
        learner.update_round = lambda *a: self._timed("dispatch", update, *a)
        agent, goal_indices = make_agent(experiment.agent), experiment.env().spec.goal_indices
        num_segments, L = experiment.segments_per_round, layout.segment_length

        def fused_round(ts, buffer, key):  # train_step of launch/single.py without the collection
            k_sample, k_relabel, k_update = jax.random.split(key, 3)
            segments = sample_segments(buffer, k_sample, num_segments, L)
            batches = relabeled_minibatches(
                k_relabel, segments, goal_indices, config.gamma, config.num_minibatches, config.batch_size
            )
            return agent.update_many(ts, batches, k_update)

        self._fused, self._buf = jax.jit(fused_round, donate_argnums=0), buf
        self._state = {"ts": jax.jit(agent.init)(jax.random.PRNGKey(1)), "key": jax.random.PRNGKey(2)}
        self.runs = {
            "reverb": (self.reverb_round, self.sync_reverb),
            "on-device": (self.device_round, self.sync_device),
        }

    def _timed(self, what: str, fn, *a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.acc[what] += time.perf_counter() - t

    def reverb_round(self) -> None:
        if self.learner.train_round() is None:
            raise RuntimeError("the prefilled table gave no batch within 0.5 s")

    def sync_reverb(self) -> None:
        jax.block_until_ready(self.learner.train_state)

    def device_round(self) -> None:
        self._state["key"], k = jax.random.split(self._state["key"])
        self._state["ts"], _metrics = self._fused(self._state["ts"], self._buf, k)

    def sync_device(self) -> None:
        jax.block_until_ready(self._state["ts"])

    def close(self) -> None:
        self.learner.sampler.close()
        self.learner.log.close()


def _time_rounds(rounds: LearnerRounds, name: str, n: int, server: ServerProcess, minibatches: int) -> dict:
    step, sync = rounds.runs[name]
    rounds.acc = dict.fromkeys(rounds.acc, 0.0)
    sync()
    cpu0, srv0 = time.process_time(), server.cpu_s()
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    wall = time.perf_counter() - start
    cpu1, srv1 = time.process_time(), server.cpu_s()
    r = {
        "updates_per_s": n * minibatches / wall,
        "ms_per_round": 1e3 * wall / n,
        "proc_cpu_ms_per_round": 1e3 * (cpu1 - cpu0) / n,
        "server_cpu_ms_per_round": 1e3 * (srv1 - srv0) / n,
    }
    if name == "reverb":
        r.update({f"{k}_ms_per_round": 1e3 * v / n for k, v in rounds.acc.items()})
        r["rest_ms_per_round"] = r["ms_per_round"] - r["wait_ms_per_round"] - r["dispatch_ms_per_round"]
    return r


def _bench_learner_depth(experiment: Experiment, server, buf, items: int, workdir: Path, args) -> dict:
    config, L = experiment.config, experiment.layout.segment_length
    depth = config.critic_depth
    rounds = LearnerRounds(experiment, server, buf, workdir / f"learner_d{depth}_L{L}")
    compile_s = {}
    for name, (step, sync) in rounds.runs.items():
        t = time.perf_counter()
        step()
        sync()
        compile_s[name] = time.perf_counter() - t
    t = time.perf_counter()  # calibrate: one more round, after compile
    rounds.device_round()
    rounds.sync_device()
    round_s = time.perf_counter() - t
    n = max(3, round(args.learner_seconds / max(round_s, 1e-3)))
    log(
        f"learner depth {depth} L={L}: construct {rounds.construct_s:.0f} s, compile {compile_s['reverb']:.0f} s "
        f"(reverb) / {compile_s['on-device']:.0f} s (on-device); {round_s * 1e3:.0f} ms/round -> {n} rounds/rep"
    )
    reps: dict[str, list[dict]] = {k: [] for k in rounds.runs}
    for i in range(args.learner_repeats):
        for name in rotated(list(rounds.runs), i):
            reps[name].append(_time_rounds(rounds, name, n, server, config.num_minibatches))
            rate = reps[name][-1]["updates_per_s"]
            log(
                f"learner depth {depth} L={L} rep {i + 1}/{args.learner_repeats} {name:<9}: {rate:,.1f} updates/s"
            )
    rounds.close()
    pairs = list(zip(reps["reverb"], reps["on-device"], strict=True))
    ratios = [r["updates_per_s"] / d["updates_per_s"] for r, d in pairs]
    cpu = lambda x: x["proc_cpu_ms_per_round"] + x["server_cpu_ms_per_round"]
    cpu_ratios = [cpu(r) / cpu(d) for r, d in pairs]
    return {
        "depth": depth, "width": config.critic_width, "batch_size": config.batch_size,
        "num_minibatches": config.num_minibatches, "segment_length": L,
        "segments_per_round": experiment.segments_per_round, "table_segments": items, "rounds_per_rep": n,
        "construct_s": rounds.construct_s, "compile_s": compile_s, "reps": reps,
        "median": {name: {k: median([r[k] for r in rs]) for k in rs[0]} for name, rs in reps.items()},
        "ratio": median(ratios), "ratio_reps": ratios, "cpu_ratio": median(cpu_ratios), "cpu_ratio_reps": cpu_ratios,
    }  # fmt: skip


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
    print("\nLearner.train_round, ms per round (median): sample wait | update dispatch | the rest (jnp.asarray, "
          "publish: device_get of the actor, which waits for the round to finish)\n")  # fmt: skip
    for r in results:
        m = r["median"]["reverb"]
        ratios = ", ".join(f"{x:.3f}" for x in r["ratio_reps"])
        print(
            f"- depth {r['depth']}, L={r['segment_length']}: {m['wait_ms_per_round']:.2f} | "
            f"{m['dispatch_ms_per_round']:.2f} | {m['rest_ms_per_round']:.1f}; reverb/on-device updates/s per "
            f"repetition: {ratios}; CPU per round (process + server) reverb/on-device: {r['cpu_ratio']:.3f} (median)"
        )
