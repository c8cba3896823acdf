"""Data-parallel CRL over 1, 2, 4, 8 devices: global batch per second and scaling efficiency.

    python benchmarks/devices_scaling.py [--depths 64 256 1024] [--batches 512 4096] [--rounds 3]
    python benchmarks/devices_scaling.py --host_devices 4 --depths 4 16 --batches 256 --width 64   # on a CPU

The update of ``learner/devices.py``'s data-parallel path (parameters replicated, each minibatch split
along its batch axis, global-batch InfoNCE) on N of this host's devices, N in ``--devices`` (those the
host has). Per (depth, batch): one compile per N, then ``--rounds`` rounds, each timing ``--calls``
calls of ``update_many`` (``--minibatches`` SGD steps per call) for every N in turn (interleaved, the
order rotated), wall and process CPU seconds. Efficiency = rate(N) / (N × rate(1)); on CPU "devices"
(``--host_devices``) share the same cores, so there it only shows what the collectives cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# XLA reads the host device count once, when JAX starts: before the imports below.
if "--host_devices" in sys.argv:
    _n = sys.argv[sys.argv.index("--host_devices") + 1]
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_n}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from deepcrl.learner import devices  # noqa: E402
from deepcrl.learner.agent import AgentConfig, make_agent  # noqa: E402
from deepcrl.learner.networks import TrunkConfig  # noqa: E402


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--depths", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[512, 4096])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--minibatches", type=int, default=4, help="SGD steps per timed call")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--remat", action="store_true", help="recompute residual blocks in the backward pass")
    ap.add_argument("--host_devices", type=int, default=0, help="on a CPU: split it into this many devices")
    ap.add_argument("--json", default="")
    return ap.parse_args()


def _timed_cell(agent, data: dict, counts: list[int], args: argparse.Namespace) -> dict[int, dict]:
    """One compile per device count, then interleaved rounds (order rotated): wall and CPU seconds."""
    runs = {}
    for n in counts:
        if data["state"].shape[1] % n:
            continue
        mesh = devices.make_mesh(n)
        rep = devices.tree_shardings(mesh, agent.init(jax.random.PRNGKey(0)), None)
        fn = jax.jit(agent.update_many, donate_argnums=0)
        state = devices.put(agent.init(jax.random.PRNGKey(0)), rep)
        batch = devices.put(data, devices.tree_shardings(mesh, data, 1))
        t = time.perf_counter()
        state, _ = fn(state, batch, jax.random.PRNGKey(1))
        jax.block_until_ready(state)
        runs[n] = {"fn": fn, "state": state, "batch": batch, "compile_s": time.perf_counter() - t, "wall": [], "cpu": []}
    for r in range(args.rounds):
        for n in list(runs)[r % len(runs) :] + list(runs)[: r % len(runs)]:
            run = runs[n]
            w, c = time.perf_counter(), time.process_time()
            for i in range(args.calls):
                run["state"], _ = run["fn"](run["state"], run["batch"], jax.random.PRNGKey(2 + i))
            jax.block_until_ready(run["state"])
            run["wall"].append(time.perf_counter() - w)
            run["cpu"].append(time.process_time() - c)
    return runs


def main() -> None:
    args = parse_args()
    counts = [n for n in args.devices if n <= jax.local_device_count()]
    S, G, A, M = 27, 2, 8, args.minibatches  # Ant's sizes
    print(f"# {jax.local_device_count()} {jax.devices()[0].device_kind} device(s); jax {jax.__version__}; "
          f"N in {counts}; width {args.width}, {M} SGD steps per call, remat {args.remat}", flush=True)  # fmt: skip
    rows = []
    for depth in args.depths:
        trunk = TrunkConfig(depth, args.width, remat=args.remat)
        agent = make_agent(AgentConfig(S, G, A, actor=trunk, critic=trunk))
        for batch in args.batches:
            rng = np.random.default_rng(0)
            data = {"state": rng.normal(size=(M, batch, S)), "action": rng.uniform(-0.9, 0.9, (M, batch, A)),
                    "goal": rng.normal(size=(M, batch, G))}  # fmt: skip
            runs = _timed_cell(agent, {k: v.astype(np.float32) for k, v in data.items()}, counts, args)
            one = None
            for n, run in runs.items():
                wall, cpu = float(np.median(run["wall"])), float(np.median(run["cpu"]))
                rate = args.calls * M * batch / wall  # global-batch transitions per second
                one = rate if n == 1 else one
                rows.append({"depth": depth, "batch": batch, "devices": n, "compile_s": run["compile_s"],
                             "transitions_per_s": rate, "updates_per_s": args.calls * M / wall,
                             "cpu_s_per_update": cpu / (args.calls * M), "wall_s_per_update": wall / (args.calls * M),
                             "efficiency": rate / (n * one) if one else None})  # fmt: skip
                eff = "-" if one is None else f"{rate / (n * one):.2f}"
                print(f"| {depth} | {batch} | {n} | {run['compile_s']:.1f} | {args.calls * M / wall:.2f} | "
                      f"{rate:,.0f} | {cpu / (args.calls * M):.3f} | {eff} |", flush=True)  # fmt: skip
    print("\n(columns: depth | global batch | devices | compile s | updates/s | transitions/s (global) | "
          "process CPU s per update | efficiency = rate / (N x rate of 1 device))")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
