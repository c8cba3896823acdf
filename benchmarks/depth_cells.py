"""The child side of ``benchmarks/depth_scaling.py``: one measurement cell per process.

    .venv/bin/python benchmarks/depth_cells.py '{"kind": "update", "depth": 4, ...}'

``depth_scaling.py`` starts this file once per cell (its own interpreter, so peak RSS is per cell
and a cell past its wall-clock cap can be killed). A cell prints what it has measured so far as
JSON lines prefixed with ``MARK`` on stdout, so a killed cell still yields e.g. its compile time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from deepcrl.collector.rollout import unroll
from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import resolve
from deepcrl.launch.single import make_single_trainer
from deepcrl.learner.agent import AgentConfig, make_agent
from deepcrl.learner.networks import TrunkConfig
from deepcrl.learner.reference import make_reference_update

T0 = time.perf_counter()
STATE, GOAL, ACTION = 29, 2, 8  # Ant: state 29-d, goal x,y, 8 actuators
MARK = "@@"  # prefix of the child's result lines, so JAX/absl log lines on stdout do not interfere

Cell = dict[str, Any]


def _emit(**fields: Any) -> None:
    """Report partial results to the parent (always with the peak RSS so far)."""
    fields["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(MARK + json.dumps(fields), flush=True)


def _cpu_s() -> float:
    """CPU seconds of this process (all threads): unlike wall time, barely moved by other jobs' load."""
    t = os.times()
    return t.user + t.system


def _remaining(p: Cell) -> float:
    return p["cap"] - (time.perf_counter() - T0)


def _time_calls(call: Callable[[], Any], first_s: float, p: Cell) -> tuple[int, float]:
    """Call ``call`` (which blocks) for about ``p['seconds']``; at least 2 calls, never past the cap.

    The number of calls is chosen before timing from the warm-up duration, so the loop itself has no
    per-step clock checks that could stall a fast step; slow cells are bounded by the remaining cap.
    """
    budget = min(p["seconds"], 0.9 * _remaining(p) - first_s)
    n = max(2, min(p.get("max_calls", 10_000), int(budget / max(first_s, 1e-6))))
    start = time.perf_counter()
    for _ in range(n):
        call()
    return n, time.perf_counter() - start


def _memory(compiled: Any) -> dict[str, float]:
    """XLA's static buffer assignment of the executable, in MiB (empty where the backend has none)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend/version implements it
        return {}
    if m is None:
        return {}
    mib = 1 / 2**20
    arg, out, tmp = m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes
    alias = m.alias_size_in_bytes  # outputs that reuse donated arguments' buffers
    return {"xla_arg_mb": arg * mib, "xla_out_mb": out * mib, "xla_temp_mb": tmp * mib,
            "xla_total_mb": (arg + out + tmp) * mib, "xla_peak_mb": (arg + out - alias + tmp) * mib}  # fmt: skip


def update_cell(p: Cell) -> None:
    """Compile and time one jitted ``agent.update`` at the given depth, width, batch and scan switch."""
    trunk = TrunkConfig(depth=p["depth"], width=p["width"], scan=p["scan"])
    agent = make_agent(AgentConfig(STATE, GOAL, ACTION, actor=trunk, critic=trunk))
    key = jax.random.PRNGKey(0)
    batch = _random_batch(p["batch"])
    shapes = jax.eval_shape(agent.init, key)  # compile from shapes: nothing materialized yet
    n_params = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves((shapes.actor, shapes.critic)))
    cpu0 = _cpu_s()
    _emit(params_m=n_params / 1e6, compile_started_epoch=time.time(), compile_started_cpu_s=cpu0)
    start = time.perf_counter()
    compiled = jax.jit(agent.update).lower(shapes, batch, key).compile()
    _emit(compile_s=time.perf_counter() - start, compile_cpu_s=_cpu_s() - cpu0, **_memory(compiled))
    if p.get("compile_only"):
        return

    state = {"ts": jax.block_until_ready(jax.jit(agent.init)(key))}

    def step() -> None:
        state["ts"] = jax.block_until_ready(compiled(state["ts"], batch, key)[0])

    start = time.perf_counter()
    step()  # warm-up: first execution (allocation, thread pools)
    first_s = time.perf_counter() - start
    _emit(first_step_s=first_s)
    n, secs = _time_calls(step, first_s, p)
    _emit(timed_steps=n, timed_s=secs, steps_per_s=n / secs)


def env_cell(p: Cell) -> None:
    """Collection alone vs the whole fused ``single`` loop on Ant, both timed after compile."""
    c = get_config()
    c.update(env="ant", backend="spring", episode_length=p["episode_length"], num_envs=p["num_envs"],
             unroll_length=p["unroll_length"], batch_size=p["batch"], num_minibatches=p["num_minibatches"],
             min_replay_steps_per_env=p["min_replay"], segment_length=0, critic_depth=p["depth"],
             actor_depth=p["depth"], critic_width=p["width"], actor_width=p["width"], num_evals=1,
             checkpoint=False)  # fmt: skip
    steps_per_collection = c.num_envs * c.unroll_length
    prefill_unrolls = math.ceil(c.min_replay_steps_per_env / c.unroll_length)
    c.total_env_steps = (prefill_unrolls + p["collections_per_epoch"]) * steps_per_collection
    experiment = resolve(c)
    trainer = make_single_trainer(experiment)
    assert trainer.layout.collections_per_epoch == p["collections_per_epoch"], trainer.layout
    agent = trainer.agent
    venv = experiment.train_venv()  # the trainer's own vectorised Ant
    key = jax.random.PRNGKey(0)
    carry = jax.block_until_ready(trainer.init(key))

    def collect(actor, env_state, k):
        """The trainer's collection without the buffer insert: stochastic policy, ``unroll_length`` steps."""
        return unroll(venv, lambda obs, kk: agent.act(actor, obs, kk), env_state, k, c.unroll_length)

    start = time.perf_counter()
    collect_c = jax.jit(collect).lower(carry.train_state.actor, carry.env_state, key).compile()
    _emit(collect_compile_s=time.perf_counter() - start, env_steps_per_call=steps_per_collection,
          updates_per_collection=c.num_minibatches, episode_length=trainer.layout.episode_length,
          segment_length=trainer.layout.segment_length, prefill_unrolls=trainer.layout.prefill_unrolls)  # fmt: skip
    env = {"s": carry.env_state, "k": key}

    def collect_call() -> None:
        env["k"], k = jax.random.split(env["k"])
        env["s"] = jax.block_until_ready(collect_c(carry.train_state.actor, env["s"], k)[0])

    start = time.perf_counter()
    collect_call()
    first_s = time.perf_counter() - start
    n, secs = _time_calls(collect_call, first_s, {**p, "seconds": p["seconds"] / 2})
    _emit(collect_calls=n, collect_s=secs, collect_env_steps_per_s=n * steps_per_collection / secs)

    carry = jax.block_until_ready(trainer.prefill(carry))
    start = time.perf_counter()
    epoch_c = trainer.train_epoch.lower(carry).compile()
    _emit(loop_compile_s=time.perf_counter() - start)
    box = {"carry": carry}

    def epoch_call() -> None:
        box["carry"] = jax.block_until_ready(epoch_c(box["carry"])[0])

    start = time.perf_counter()
    epoch_call()
    first_s = time.perf_counter() - start
    n, secs = _time_calls(epoch_call, first_s, p)
    env_steps = n * p["collections_per_epoch"] * steps_per_collection
    _emit(loop_calls=n, loop_s=secs, loop_env_steps_per_s=env_steps / secs,
          loop_updates_per_s=n * p["collections_per_epoch"] * c.num_minibatches / secs)  # fmt: skip


def _random_batch(batch: int) -> dict:
    ks, ka, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    return {
        "state": jax.random.normal(ks, (batch, STATE)),
        "action": jax.random.uniform(ka, (batch, ACTION), minval=-0.99, maxval=0.99),
        "goal": jax.random.normal(kg, (batch, GOAL)),
    }


def compare_cell(p: Cell) -> None:
    """Ours (each variant in ``p['variants']``) against the paper-shaped baseline, interleaved.

    Everything is compiled first (ours before the baseline, so a baseline compile cut off by the cap
    still leaves ours measured), then ``p['rounds']`` rounds each time every program for
    ``p['calls']`` blocked calls: wall seconds and CPU seconds (``time.process_time``, all threads).
    """

    key = jax.random.PRNGKey(0)
    batch = _random_batch(p["batch"])
    base_trunk = TrunkConfig(depth=p["depth"], width=p["width"])
    programs: dict[str, tuple[Any, Any]] = {}  # name -> (compiled, initial state)
    for v in p["variants"]:
        trunk = dataclasses.replace(base_trunk, **v.get("trunk", {}))
        agent = make_agent(AgentConfig(STATE, GOAL, ACTION, actor=trunk, critic=trunk))
        shapes = jax.eval_shape(agent.init, key)
        cpu0, start = time.process_time(), time.perf_counter()
        donate = (0,) if v.get("donate", True) else ()
        compiled = jax.jit(agent.update, donate_argnums=donate).lower(shapes, batch, key).compile()
        _emit(variant=v["name"], compile_s=time.perf_counter() - start, compile_cpu_s=time.process_time() - cpu0,
              **_memory(compiled))  # fmt: skip
        programs[v["name"]] = (compiled, jax.jit(agent.init)(key))
    if p.get("baseline"):
        cfg = AgentConfig(STATE, GOAL, ACTION, actor=base_trunk, critic=base_trunk)
        init, update = make_reference_update(cfg)
        shapes = jax.eval_shape(init, key)
        cpu0, start = time.process_time(), time.perf_counter()
        _emit(variant="baseline", compile_started_epoch=time.time(), compile_started_cpu_s=_cpu_s())
        compiled = jax.jit(update, donate_argnums=0).lower(shapes, batch, key).compile()
        _emit(variant="baseline", compile_s=time.perf_counter() - start,
              compile_cpu_s=time.process_time() - cpu0, **_memory(compiled))  # fmt: skip
        programs["baseline"] = (compiled, jax.jit(init)(key))
    states = {name: jax.block_until_ready(ts) for name, (_, ts) in programs.items()}
    for name, (compiled, _) in programs.items():  # warm-up: first execution of each
        states[name] = jax.block_until_ready(compiled(states[name], batch, key)[0])
    stats = jax.devices()[0].memory_stats() or {}  # GPU allocators count; the CPU client reports none
    if "peak_bytes_in_use" in stats:
        _emit(device_peak_mb=stats["peak_bytes_in_use"] / 2**20)
    for r in range(p["rounds"]):
        for name, (compiled, _) in programs.items():
            cpu0, start = time.process_time(), time.perf_counter()
            for _ in range(p["calls"]):
                states[name] = jax.block_until_ready(compiled(states[name], batch, key)[0])
            _emit(variant=name, round=r, calls=p["calls"], round_wall_s=time.perf_counter() - start,
                  round_cpu_s=time.process_time() - cpu0, load=os.getloadavg()[0])  # fmt: skip
        if _remaining(p) < 0.2 * p["cap"]:
            break


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc."""
    now = peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, peak


def memory_cell(p: Cell) -> None:
    """XLA's buffer count of the donated update at each batch in ``p['batches']`` (compile only), then,
    at the first batch, two executed updates: peak RSS and its rise over the RSS just before them."""

    trunk = TrunkConfig(depth=p["depth"], width=p["width"], remat=p["remat"])
    agent = make_agent(AgentConfig(STATE, GOAL, ACTION, actor=trunk, critic=trunk))
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(agent.init, key)
    compiled = None
    for b in p["batches"]:
        cpu0, start = time.process_time(), time.perf_counter()
        c = jax.jit(agent.update, donate_argnums=0).lower(shapes, _random_batch(b), key).compile()
        m = c.memory_analysis()
        peak = (
            m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
        )
        _emit(batch=b, compile_s=time.perf_counter() - start, compile_cpu_s=time.process_time() - cpu0,
              xla_arg_mb=m.argument_size_in_bytes / 2**20, xla_temp_mb=m.temp_size_in_bytes / 2**20,
              xla_alias_mb=m.alias_size_in_bytes / 2**20, xla_peak_mb=peak / 2**20)  # fmt: skip
        compiled = compiled or c
        del c
    if not p.get("execute"):
        return
    batch = _random_batch(p["batches"][0])
    ts = jax.block_until_ready(jax.jit(agent.init)(key))
    before, _ = _rss_mb()
    cpu0, start = time.process_time(), time.perf_counter()
    for _ in range(2):
        ts = jax.block_until_ready(compiled(ts, batch, key)[0])
    now, peak = _rss_mb()
    _emit(rss_before_mb=before, rss_peak_mb=peak, rss_rise_mb=peak - before,
          step_s=(time.perf_counter() - start) / 2, step_cpu_s=(time.process_time() - cpu0) / 2)  # fmt: skip


CELLS: dict[str, Callable[[Cell], None]] = {
    "update": update_cell,
    "env": env_cell,
    "compare": compare_cell,
    "memory": memory_cell,
}


if __name__ == "__main__":
    params = json.loads(sys.argv[1])
    CELLS[params["kind"]](params)
