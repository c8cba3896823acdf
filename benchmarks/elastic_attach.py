"""What elastic learners cost the collector: spare tables in steady state, and an attach while it happens.

    .venv/bin/python benchmarks/elastic_attach.py [--rounds 3] [--total_env_steps 60000] [--skip_steady]

1. Steady state, per extra table: ``actor_learner`` on point_mass to its end with ``spare_tables=0``,
   ``spare_tables=2`` (the default: two tables no one writes to) and ``spare_tables=2`` with
   ``attach_warm_start=true`` (both spares fed every segment and drained by the replay), interleaved
   ``--rounds`` times. Per run: wall, the collector's CPU ms per 1,000 env steps, the replay's CPU
   seconds per 1,000 env steps, the collector's env steps/s; medians and ratios to ``spare_tables=0``.
2. One attach: a long ``actor_learner`` run; after ``--before_s`` of training, ``launch/run.py
   --attach RUN --learner_depths 4``. The collector's env steps are read from ``RUN/roles.json``
   (its progress, refreshed every 2 s) every 0.5 s; printed: the time from the request to the
   answer (the learner trains), the collector's env steps/s before, during and ``--after_s`` after
   it, and CPU seconds of every role over each window. Then the run is stopped with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RoleCpu, machine

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "launch" / "run.py")]
SMALL = ["--topology", "actor_learner", "--env", "point_mass", "--num_envs", "16", "--num_eval_envs", "8",
         "--batch_size", "64", "--critic_width", "32", "--actor_width", "32", "--set", "num_minibatches=4",
         "--noprogress"]  # fmt: skip
SETTINGS = {"spares 0": ["spare_tables=0"], "spares 2 (unfed)": ["spare_tables=2"],
            "spares 2 (fed, drained)": ["spare_tables=2", "attach_warm_start=true"]}  # fmt: skip


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def steady_once(name: str, total: int, tmp: Path) -> dict:
    run_dir = tmp / f"steady-{time.monotonic_ns()}"
    args = [*RUN, *SMALL, "--num_evals", "3", "--total_env_steps", str(total), "--run_dir", str(run_dir)]
    t0 = time.time()
    proc = subprocess.Popen([*args, *_sets(SETTINGS[name])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    cpu = RoleCpu(run_dir)
    while proc.poll() is None:
        cpu.tick(proc.pid)
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"run failed (rc {proc.returncode}):\n{proc.stderr.read()[-3000:]}")
    steps = json.loads((run_dir / "summary.json").read_text())["collector"]["env_steps"]
    wall = time.time() - t0
    return {"setting": name, "wall_s": wall, "env_steps": steps,
            "collector_cpu_ms_per_1k": 1e6 * cpu.of("collector") / steps,
            "replay_cpu_ms_per_1k": 1e6 * cpu.of("replay") / steps,
            "collector_steps_per_s": steps / wall}  # fmt: skip


def steady(rounds: int, total: int, tmp: Path) -> None:
    results = []
    for r in range(rounds):
        order = list(SETTINGS)[r % 3 :] + list(SETTINGS)[: r % 3]  # each setting takes a turn first
        for name in order:
            results.append(steady_once(name, total, tmp))
            print(json.dumps({"round": r, **results[-1]}), flush=True)
    keys = ("wall_s", "collector_cpu_ms_per_1k", "replay_cpu_ms_per_1k", "collector_steps_per_s")
    med = {s: {k: statistics.median(x[k] for x in results if x["setting"] == s) for k in keys} for s in SETTINGS}
    base = med["spares 0"]
    print("\n| setting | wall (s) | collector CPU ms / 1k env steps | replay CPU ms / 1k env steps "
          "| collector env steps/s (whole run) |\n|---|---|---|---|---|")  # fmt: skip
    for s, m in med.items():
        ratio = {k: m[k] / base[k] for k in keys}
        print(f"| {s} | {m['wall_s']:.1f} ({ratio['wall_s']:.3f}x) | {m['collector_cpu_ms_per_1k']:.0f} "
              f"({ratio['collector_cpu_ms_per_1k']:.3f}x) | {m['replay_cpu_ms_per_1k']:.0f} "
              f"({ratio['replay_cpu_ms_per_1k']:.3f}x) | {m['collector_steps_per_s']:,.0f} "
              f"({ratio['collector_steps_per_s']:.3f}x) |")  # fmt: skip


class Watch:
    """(time, collector env steps) from roles.json, and the roles' CPU, sampled every 0.5 s."""

    def __init__(self, run_dir: Path, driver_pid: int) -> None:
        self.run_dir, self.driver_pid = run_dir, driver_pid
        self.cpu, self.samples = RoleCpu(run_dir), []  # samples: (t, env steps, {role: cpu s})

    def tick(self) -> None:
        self.cpu.tick(self.driver_pid)
        try:
            steps = json.loads((self.run_dir / "roles.json").read_text())["roles"]["collector"]["progress"]
        except (OSError, ValueError, KeyError):
            return
        roles = {r for r, _ in self.cpu.seen}
        self.samples.append((time.time(), steps or 0, {r: self.cpu.of(r) for r in roles}))

    def wait(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            self.tick()
            time.sleep(0.5)

    def window(self, t0: float, t1: float) -> dict:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return {}
        (ta, sa, ca), (tb, sb, cb) = inside[0], inside[-1]
        return {"s": tb - ta, "steps_per_s": (sb - sa) / (tb - ta),
                "cpu_s": {r: round(cb.get(r, 0.0) - ca.get(r, 0.0), 1) for r in cb}}  # fmt: skip


def attach_once(args: argparse.Namespace, tmp: Path) -> None:
    run_dir = tmp / "attach"
    cmd = [*RUN, *SMALL, "--num_evals", "50", "--total_env_steps", "50000000", "--run_dir", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    watch = Watch(run_dir, proc.pid)
    try:
        while not watch.samples or watch.samples[-1][1] == 0:  # until the collector reports progress
            if proc.poll() is not None:
                raise SystemExit(f"run failed (rc {proc.returncode}):\n{proc.stderr.read()[-3000:]}")
            watch.wait(1.0)
        watch.wait(args.before_s)
        t_req = time.time()
        attach = subprocess.Popen([*RUN, "--attach", str(run_dir), "--learner_depths", "4"], text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        while attach.poll() is None:
            watch.wait(0.5)
        t_ans = time.time()
        out, err = attach.communicate()
        if attach.returncode != 0:
            raise SystemExit(f"attach failed: {err.strip()}")
        watch.wait(args.after_s)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=300)
    windows = {"before": watch.window(t_req - args.before_s + 5, t_req),
               "attaching (request to answer)": watch.window(t_req, t_ans),
               f"after ({args.after_s:.0f} s, one more learner)": watch.window(t_ans, t_ans + args.after_s)}  # fmt: skip
    print(f"\n{out.strip()}\nrequest to answer (the learner trains): {t_ans - t_req:.1f} s\n")
    print("| window | seconds | collector env steps/s | CPU s per role |\n|---|---|---|---|")
    for name, w in windows.items():
        cpu = ", ".join(f"{r} {v}" for r, v in sorted(w.get("cpu_s", {}).items()))
        print(f"| {name} | {w.get('s', 0):.0f} | {w.get('steps_per_s', 0):,.0f} | {cpu} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--total_env_steps", type=int, default=60_000)
    p.add_argument("--before_s", type=float, default=30.0)
    p.add_argument("--after_s", type=float, default=30.0)
    p.add_argument("--skip_steady", action="store_true")
    a = p.parse_args()
    print(f"# {json.dumps(machine())}; load {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not a.skip_steady:
            steady(a.rounds, a.total_env_steps, Path(tmp))
        attach_once(a, Path(tmp))
    print(f"\n# load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
