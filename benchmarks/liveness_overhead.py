"""What the liveness watchdog costs a distributed run: CPU per env step and per update.

    .venv/bin/python benchmarks/liveness_overhead.py [--rounds 3] [--total_env_steps 60000]

Runs ``actor_learner`` on point_mass to its end, interleaving ``role_progress_every_s`` = 0 (no
watchdog: no progress calls), 2 (the default) and 0.2 (ten times as often, to make a cost visible),
``--rounds`` times each. Per run: wall time, CPU seconds of the whole process tree (driver, Ray,
every role; ``RUSAGE_CHILDREN`` of this process after the run, which counts every reaped
descendant), CPU ms per 1,000 env steps and per 1,000 updates, and the collector's env steps/s.
Prints one markdown table, the median per setting and each setting's ratio to 0.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = (0.0, 2.0, 0.2)


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(every: float, total: int, tmp: Path) -> dict:
    run_dir = tmp / f"run-{every}-{time.monotonic_ns()}"
    args = [
        sys.executable, str(ROOT / "launch" / "run.py"), "--topology", "actor_learner", "--env", "point_mass",
        "--num_envs", "16", "--num_eval_envs", "8", "--batch_size", "64", "--critic_width", "32",
        "--actor_width", "32", "--num_evals", "3", "--set", "num_minibatches=4", "--noprogress",
        "--total_env_steps", str(total), "--set", f"role_progress_every_s={every}", "--run_dir", str(run_dir),
    ]  # fmt: skip
    cpu0, t0 = _cpu_children(), time.time()
    res = subprocess.run(args, capture_output=True, text=True)
    wall, cpu = time.time() - t0, _cpu_children() - cpu0
    if res.returncode != 0:
        raise SystemExit(f"run failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    steps, updates = summary["collector"]["env_steps"], summary["learners"][0]["updates"]
    rows = [json.loads(line) for line in (run_dir / "collector" / "metrics.jsonl").read_text().splitlines()]
    return {
        "every": every, "wall_s": wall, "cpu_s": cpu, "env_steps": steps, "updates": updates,
        "cpu_ms_per_1k_steps": 1e6 * cpu / steps / 1000, "cpu_ms_per_1k_updates": 1e6 * cpu / updates / 1000,
        "collector_steps_per_s": rows[-1]["env_steps_per_s"],
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--total_env_steps", type=int, default=60_000)
    a = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for every in SETTINGS:  # interleaved: a noisy minute hits every setting alike
                results.append(run_once(every, a.total_env_steps, Path(tmp)))
                print(json.dumps({"round": r, **results[-1]}), flush=True)
    keys = ("wall_s", "cpu_s", "cpu_ms_per_1k_steps", "cpu_ms_per_1k_updates", "collector_steps_per_s")
    median = {e: {k: statistics.median(x[k] for x in results if x["every"] == e) for k in keys} for e in SETTINGS}
    print("\n| role_progress_every_s | wall (s) | CPU (s) | CPU ms / 1k env steps | CPU ms / 1k updates "
          "| collector env steps/s | CPU vs no watchdog |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for e in SETTINGS:
        m = median[e]
        ratio = m["cpu_s"] / median[0.0]["cpu_s"]
        print(f"| {e:g} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['cpu_ms_per_1k_steps']:.1f} "
              f"| {m['cpu_ms_per_1k_updates']:.1f} | {m['collector_steps_per_s']:.0f} | {ratio:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
