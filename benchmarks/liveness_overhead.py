"""What the liveness watchdog costs a distributed run: CPU per env step and per update.

    .venv/bin/python benchmarks/liveness_overhead.py [--rounds 3] [--total_env_steps 60000]

Runs ``actor_learner`` on point_mass to its end, interleaving ``role_progress_every_s`` = 0 (no
watchdog: no progress calls), 2 (the default) and 0.2 (ten times as often, to make a cost visible),
``--rounds`` times each. Per run: wall time; CPU seconds of the collector's and the learner's
processes (their PIDs from ``RUN/roles.json``, ``/proc/PID/stat`` read every 0.2 s while they live:
the last 0.2 s of each is missed, alike in every setting), the collector's CPU ms per 1,000 env
steps, the learner's per 1,000 updates, the driver's CPU (which makes the polls), and the
collector's env steps/s.
Prints one markdown table, the median per setting and each setting's ratio to 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RoleCpu

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = (0.0, 2.0, 0.2)


def run_once(every: float, total: int, tmp: Path) -> dict:
    run_dir = tmp / f"run-{every}-{time.monotonic_ns()}"
    args = [
        sys.executable, str(ROOT / "launch" / "run.py"), "--topology", "actor_learner", "--env", "point_mass",
        "--num_envs", "16", "--num_eval_envs", "8", "--batch_size", "64", "--critic_width", "32",
        "--actor_width", "32", "--num_evals", "3", "--set", "num_minibatches=4", "--noprogress",
        "--total_env_steps", str(total), "--set", f"role_progress_every_s={every}", "--run_dir", str(run_dir),
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu = RoleCpu(run_dir)
    while proc.poll() is None:
        cpu.tick(proc.pid)
        time.sleep(0.2)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed (rc {proc.returncode}):\n{proc.stderr.read()[-3000:]}")
    by_role = {n: cpu.of(n) for n in ("collector", "collector_learner", "driver")}
    summary = json.loads((run_dir / "summary.json").read_text())
    steps, updates = summary["collector"]["env_steps"], summary["learners"][0]["updates"]
    rows = [json.loads(line) for line in (run_dir / "collector" / "metrics.jsonl").read_text().splitlines()]
    return {
        "every": every, "wall_s": wall, "env_steps": steps, "updates": updates,
        "collector_cpu_s": by_role["collector"], "learner_cpu_s": by_role["collector_learner"],
        "driver_cpu_s": by_role["driver"],
        "collector_cpu_ms_per_1k_steps": 1e6 * by_role["collector"] / steps,
        "learner_cpu_ms_per_1k_updates": 1e6 * by_role["collector_learner"] / updates,
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
    keys = ("wall_s", "collector_cpu_ms_per_1k_steps", "learner_cpu_ms_per_1k_updates", "driver_cpu_s",
            "collector_steps_per_s")  # fmt: skip
    median = {e: {k: statistics.median(x[k] for x in results if x["every"] == e) for k in keys} for e in SETTINGS}
    base = median[0.0]
    print("\n| role_progress_every_s | wall (s) | collector CPU ms / 1k env steps | learner CPU ms / update "
          "| driver CPU (s) | collector env steps/s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for e in SETTINGS:
        m = median[e]
        c = m["collector_cpu_ms_per_1k_steps"] / base["collector_cpu_ms_per_1k_steps"]
        u = m["learner_cpu_ms_per_1k_updates"] / base["learner_cpu_ms_per_1k_updates"]
        print(f"| {e:g} | {m['wall_s']:.1f} | {m['collector_cpu_ms_per_1k_steps']:.0f} ({c:.3f}x) "
              f"| {m['learner_cpu_ms_per_1k_updates'] / 1000:.1f} ({u:.3f}x) | {m['driver_cpu_s']:.1f} "
              f"| {m['collector_steps_per_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
