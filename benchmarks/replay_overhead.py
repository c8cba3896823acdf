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
   ``Collector.run`` once more with clocks around its unroll, its writer's ``put`` and ``close`` and the
   writer thread's ``write`` (write on / off) says where the time goes: acting, ``device_get``, ``put``,
   the final flush, the rest (segment assembly, the per-step record, logging), the writer thread's wall
   and CPU time inside ``write``, and the CPU time of this process and of the server process.
   (``benchmarks/replay_overhead_collector.py``)
2. Learner. Updates/s of ``Learner.train_round``, the body of ``Learner.run`` minus evaluation and
   logging (``SegmentSampler.sample`` -> ``jnp.asarray`` -> the Learner's jitted relabel +
   ``update_many`` -> publish the actor with ``device_get``), against the fused loop's data source (``sample_segments``
   from a prefilled on-device ``TrajectoryBuffer`` -> the same relabel + ``update_many``, one jitted call
   per round, synchronised only at the end), at the same depth, width, batch and minibatches, after
   compile. Table and buffer hold the same synthetic data (timing does not depend on its values).
   (``benchmarks/replay_overhead_learner.py``)

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
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine
from replay_overhead_collector import COLLECTOR_ENVS, bench_collector, print_collector
from replay_overhead_learner import bench_learner, print_learner

from deepcrl.buffer import replay_backend


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="short check: 2 repetitions, depth 4 only, short runs"
    )
    p.add_argument("--parts", nargs="+", default=["collector", "learner"], choices=["collector", "learner"])
    p.add_argument("--envs", nargs="+", default=list(COLLECTOR_ENVS), choices=list(COLLECTOR_ENVS))
    p.add_argument("--backends", nargs="+", default=[b for b in replay_backend.BACKENDS if replay_backend.available(b)],
                   choices=list(replay_backend.BACKENDS), help="collector part: the replay backends written to")  # fmt: skip
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
    return args


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    info = machine()
    load0 = os.getloadavg()
    out: dict[str, Any] = {"machine": info, "args": vars(args), "collector": [], "learner": []}
    with tempfile.TemporaryDirectory(prefix="replay_overhead_") as tmp:
        workdir = Path(tmp)
        if "collector" in args.parts:
            for env in args.envs:
                for backend in args.backends:
                    out["collector"].append(bench_collector(env, args, workdir / f"{env}_{backend}", backend))
        if "learner" in args.parts:
            for seg in args.learner_segment_lengths:
                out["learner"] += bench_learner(seg, args, workdir / f"learner_L{seg}")
    out["load_avg"] = {"start": load0, "end": os.getloadavg()}
    out["wall_s"] = time.perf_counter() - start

    print(
        f"\nMachine: {info['cpu']}, {info['nproc']} CPU cores; jax {info['jax']}, dm-reverb "
        f"{info['dm-reverb']}, brax {info['brax']}; {info['date']}; load average "
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
