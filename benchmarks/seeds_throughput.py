"""K seeds of ``single`` in one vmapped program against K sequential one-seed runs.

    nice .venv/bin/python benchmarks/seeds_throughput.py [--envs point_mass,ant] [--ks 1,2,4,8] [--reps 3]

Per env, one process compiles the fused training epoch (collect + insert + sample + relabel +
updates) for every K (``num_seeds = K``; K = 1 is the plain one-seed program) and then, in each
repetition and in rotated order, times for every K > 1: one epoch of the K-seed program ("in one")
and K epochs of the one-seed program back to back ("sequential": what K runs of the same shape cost
once compiled, as a study compiles a shape once). Printed per env and K: env steps/s of both (wall),
CPU seconds of both (this process, all threads; other tenants' load moves them far less than wall
time), and the medians over repetitions of sequential / in-one for wall and CPU time (> 1: one
program is faster). Evaluation and checkpoints are left out: both variants do the same of those.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import jax

from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import resolve
from deepcrl.launch.single import make_single_trainer, run_keys

SIZES = {  # small width, few envs; collections per epoch sized for ~0.5-1 s per one-seed epoch (idle)
    "point_mass": {"collections_per_epoch": 24},
    "ant": {"collections_per_epoch": 8, "backend": "spring"},
}


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _config(env: str, k: int, args):
    c = get_config()
    c.update(env=env, num_seeds=k, num_envs=args.num_envs, num_eval_envs=4, unroll_length=args.unroll,
             batch_size=args.batch, num_minibatches=args.minibatches, min_replay_steps_per_env=args.unroll * 2,
             replay_steps_per_env=args.unroll * 20, critic_width=args.width, actor_width=args.width,
             critic_depth=args.depth, actor_depth=args.depth, num_evals=1, checkpoint=False)  # fmt: skip
    c.backend = SIZES[env].get("backend", "")
    prefill_unrolls = math.ceil(c.min_replay_steps_per_env / c.unroll_length)
    collections = SIZES[env]["collections_per_epoch"] * args.epoch_scale
    c.total_env_steps = (prefill_unrolls + collections) * c.num_envs * c.unroll_length
    return c


def measure_env(env: str, args) -> list[dict]:
    programs = {}
    for k in args.ks:
        c = _config(env, k, args)
        trainer = make_single_trainer(resolve(c))
        carry = jax.block_until_ready(trainer.prefill(trainer.init(run_keys(c.seed, k))))
        t0, c0 = time.perf_counter(), _cpu_s()
        epoch = trainer.train_epoch.lower(carry).compile()
        compile_s, compile_cpu = time.perf_counter() - t0, _cpu_s() - c0
        carry = jax.block_until_ready(epoch(carry)[0])  # warm-up
        steps = trainer.layout.collections_per_epoch * trainer.layout.steps_per_collection * k
        programs[k] = {"epoch": epoch, "carry": carry, "steps": steps}
        print(f"# {env} K={k}: compile {compile_s:.1f} s ({compile_cpu:.1f} CPU s), {steps} env steps/epoch",
              flush=True)  # fmt: skip

    def run(k: int, calls: int) -> tuple[float, float]:
        p = programs[k]
        t0, c0 = time.perf_counter(), _cpu_s()
        for _ in range(calls):
            p["carry"] = jax.block_until_ready(p["epoch"](p["carry"])[0])
        return time.perf_counter() - t0, _cpu_s() - c0

    many = [k for k in args.ks if k > 1]
    samples: dict[int, list[dict]] = {k: [] for k in many}
    for rep in range(args.reps):
        order = many[rep % len(many) :] + many[: rep % len(many)]
        for k in order:
            variants = [("in_one", k, 1), ("sequential", 1, k)]
            if rep % 2:
                variants.reverse()
            timed = {name: run(kk, calls) for name, kk, calls in variants}
            samples[k].append(timed)
    rows = []
    for k in many:
        steps = programs[k]["steps"]
        wall = {v: statistics.median(s[v][0] for s in samples[k]) for v in ("in_one", "sequential")}
        cpu = {v: statistics.median(s[v][1] for s in samples[k]) for v in ("in_one", "sequential")}
        rows.append({
            "env": env, "K": k, "env_steps": steps,
            "in_one_steps_per_s": steps / wall["in_one"], "sequential_steps_per_s": steps / wall["sequential"],
            "in_one_wall_s": wall["in_one"], "sequential_wall_s": wall["sequential"],
            "in_one_cpu_s": cpu["in_one"], "sequential_cpu_s": cpu["sequential"],
            "wall_ratio": statistics.median(s["sequential"][0] / s["in_one"][0] for s in samples[k]),
            "cpu_ratio": statistics.median(s["sequential"][1] / s["in_one"][1] for s in samples[k]),
            "wall_ratios": [round(s["sequential"][0] / s["in_one"][0], 2) for s in samples[k]],
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envs", default="point_mass,ant")
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--num_envs", type=int, default=4)
    parser.add_argument("--unroll", type=int, default=25)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--minibatches", type=int, default=4)
    parser.add_argument("--epoch_scale", type=int, default=1, help="multiply the collections per epoch")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    args = parser.parse_args()
    args.ks = sorted({1, *(int(k) for k in args.ks.split(","))})
    start, load = time.time(), os.getloadavg()
    print(f"# {platform.node()} {os.cpu_count()} cores, load average {load[0]:.1f} at start; width {args.width}, "
          f"depth {args.depth}, {args.num_envs} envs x unroll {args.unroll}, batch {args.batch} x "
          f"{args.minibatches} minibatches per collection", flush=True)  # fmt: skip
    rows = [row for env in args.envs.split(",") for row in measure_env(env, args)]
    head = ("env", "K", "in one: steps/s", "sequential: steps/s", "in one: CPU s", "sequential: CPU s",
            "seq/in-one wall", "seq/in-one CPU", "wall ratio per rep")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['env']} | {r['K']} | {r['in_one_steps_per_s']:,.0f} | {r['sequential_steps_per_s']:,.0f} | "
              f"{r['in_one_cpu_s']:.2f} | {r['sequential_cpu_s']:.2f} | {r['wall_ratio']:.2f} | "
              f"{r['cpu_ratio']:.2f} | {', '.join(map(str, r['wall_ratios']))} |")  # fmt: skip
    load = os.getloadavg()
    print(
        f"# took {time.time() - start:.0f} s; load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
