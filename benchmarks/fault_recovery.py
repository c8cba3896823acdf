"""Time to recover from a kill -9 (or a freeze) of each role of a distributed run, and what it loses.

    .venv/bin/python benchmarks/fault_recovery.py [--env point_mass] [--fault kill|stop] [--run_dir DIR]
        [-- extra run.py flags]

``--fault stop`` freezes each role with SIGSTOP instead (a hung role: the liveness watchdog must
find it; the run gets ``role_stall_timeout_s=10``, ``role_progress_every_s=1``) and adds
``detected``: freeze -> the driver names the role stalled (it has SIGKILLed it by then), and
``progress lost``: the role's progress count when frozen minus the count it resumed from (learner:
updates since its last checkpoint; collector: env steps since its last record; replay: inserts and
samples since its last checkpoint).

Starts one ``decoupling`` run (collector agent + two train-only learners, all through a real Reverb
server on an embedded Ray), then kills, one after the other and each once the previous one has
recovered: a train-only learner, the collector, the replay server and the driving learner, each by
``kill -9`` of the PID that ``RUN/roles.json`` gives. Per kill it prints

- ``back``: kill -> the driver reports the role running again (its new actor constructed, checkpoint
  restored);
- ``working``: kill -> the role's first work after the restart: for a learner its first periodic
  checkpoint after coming back (written after a round of updates; ``checkpoint_every_s=1``), for the
  collector its first collection step (its record's env steps grow), for the replay the driving
  learner's first checkpoint after the replay is back (it sampled again);
- ``lost``: segments the collector handed over that never reached the tables, accrued during this
  kill (collector: segments queued; replay: inserted after its last checkpoint, every 2 s here);
- ``drained``: samples discarded on behalf of a learner while it was down (its missed updates).

Then it stops the run with SIGINT (as Ctrl-C) and prints the table as markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    a = _parse_args()
    run_dir = Path(a.run_dir or f"/tmp/fault_recovery-{a.env}-{int(time.time())}")
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")
    proc = subprocess.Popen(_run_command(a, run_dir), stdout=log, stderr=log, start_new_session=True)
    started = time.time()
    run = _Run(run_dir, proc)
    names = ["collector_learner", "learner1_d4", "learner2_d4"]
    run.wait(
        lambda: all(run.mtime(n) for n in names) and run.record() and any((run_dir / "replay").glob("*")),
        "training",
    )
    print(f"run up and training after {time.time() - started:.0f} s: {run_dir}", flush=True)
    results = []
    for role in ("learner1_d4", "collector", "replay", "collector_learner"):
        time.sleep(3)
        results.append(_fault_and_recover(run, role, a.fault))
        print(json.dumps(results[-1]), flush=True)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=900)
    _print_tables(json.loads((run_dir / "summary.json").read_text()), a.env, a.fault, results)


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="point_mass")
    p.add_argument("--run_dir", default="")
    p.add_argument("--fault", choices=("kill", "stop"), default="kill")
    p.add_argument("extra", nargs="*", help="more run.py flags (after --)")
    return p.parse_args()


def _run_command(a: argparse.Namespace, run_dir: Path) -> list[str]:
    """The ``launch/run.py`` command of the small, endless ``decoupling`` run the faults hit."""
    small = [
        "--num_envs", "8", "--num_eval_envs", "4", "--batch_size", "32", "--critic_width", "16",
        "--actor_width", "16", "--set", "num_minibatches=2", "--set", "deep_depth=4",
        "--set", "min_replay_steps_per_env=100", "--set", "unroll_length=25",
    ]  # fmt: skip
    args = [
        sys.executable, str(ROOT / "launch" / "run.py"), "--topology", "decoupling", "--env", a.env,
        *small, "--noprogress", "--total_env_steps", "1000000000", "--num_evals", "1000000",
        "--set", "checkpoint_every_s=1", "--set", "replay_checkpoint_every_s=2",
        *a.extra, "--run_dir", str(run_dir),
    ]  # fmt: skip
    if a.fault == "stop":
        args[-2:-2] = ["--set", "role_stall_timeout_s=10", "--set", "role_progress_every_s=1"]
    return args


class _Run:
    """The running benchmark run, read back from its run directory while it runs."""

    def __init__(self, run_dir: Path, proc: subprocess.Popen):
        self.run_dir, self.proc = run_dir, proc

    def roles(self) -> dict:
        try:
            return json.loads((self.run_dir / "roles.json").read_text())["roles"]
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def record(self) -> dict:
        try:
            return json.loads((self.run_dir / "collector" / "checkpoint.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def mtime(self, name: str) -> float:
        p = self.run_dir / name / "checkpoints" / "latest"
        return p.stat().st_mtime if p.exists() else 0.0

    def wait(self, pred, what: str, timeout: float = 900) -> float:
        """The time ``pred()`` first holds; the run killed and the benchmark ended after ``timeout`` s."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if pred():
                return time.time()
            if self.proc.poll() is not None:
                raise SystemExit(f"the run ended (rc {self.proc.returncode}) while waiting for {what}")
            time.sleep(0.1)
        os.killpg(self.proc.pid, signal.SIGKILL)
        raise SystemExit(f"timed out waiting for {what}")


def _fault_and_recover(run: _Run, role: str, fault: str) -> dict:
    """Kill (or freeze) ``role`` and time its detection, its return and its first work; what it lost."""
    roles, record = run.roles, run.record
    before = roles()[role]["restarts"]
    steps0, put0 = record().get("env_steps", 0), record().get("segments_put", 0)
    t_kill = time.time()
    progress_at_fault = roles()[role].get("progress") or 0
    os.kill(roles()[role]["pid"], signal.SIGSTOP if fault == "stop" else signal.SIGKILL)
    t_detect = t_kill
    if fault == "stop":
        stalls = roles()[role].get("stalls", 0)
        t_detect = run.wait(lambda r=role, s=stalls: roles()[r].get("stalls", 0) > s, f"{role} found stalled")
    t_back = run.wait(
        lambda r=role, b=before: roles()[r]["restarts"] > b and roles()[r]["status"] == "running",
        f"{role} back",
    )
    if role == "collector":
        at_back = record().get("env_steps", 0)
        t_work = run.wait(lambda s=at_back: record().get("env_steps", 0) > s, "a collection")
    else:
        watched = "collector_learner" if role == "replay" else role
        since = max(run.mtime(watched), t_back)
        t_work = run.wait(lambda w=watched, t=since: run.mtime(w) > t, f"{watched} updates")
    lost = progress_at_fault - min(progress_at_fault, _first_progress_after(roles, role, t_back))
    return {"role": role, "detected_s": t_detect - t_kill, "progress_lost": lost,
            "back_s": t_back - t_kill, "working_s": t_work - t_kill,
            "steps_during": record().get("env_steps", 0) - steps0,
            "put_during": record().get("segments_put", 0) - put0}  # fmt: skip


def _print_tables(summary: dict, env: str, fault: str, results: list[dict]) -> None:
    """The run's totals, the per-fault table and the roles' restarts, as markdown."""
    c = summary["collector"]
    tables = summary["replay_tables"]
    print(f"\nenv {env}; collector env steps {c['env_steps']}, segments handed over {c['segments_written']}, "
          f"lost {c['segments_lost']}, parameter fetches that failed {c['params_fetch_failures']}")  # fmt: skip
    print(f"\n| role ({fault}) | detected (s) | back (s) | first work (s) | progress lost "
          "| env steps collected meanwhile | drained samples |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        drained = tables.get(r["role"], {}).get("drained_while_down", "")
        print(f"| {r['role']} | {r['detected_s']:.1f} | {r['back_s']:.1f} | {r['working_s']:.1f} "
              f"| {r['progress_lost']} | {r['steps_during']} | {drained} |")  # fmt: skip
    print("\n| role | restarts | deaths | stalls | downtime (s) |\n|---|---|---|---|---|")
    for n, r in summary["roles"].items():
        print(f"| {n} | {r['restarts']} | {r.get('deaths')} | {r.get('stalls')} | {r['downtime_s']:.1f} |")


def _first_progress_after(roles, role: str, since: float) -> int:
    """The progress count the restarted role reported first (the count it resumed from)."""
    while True:
        r = roles()[role]
        if r.get("last_progress") and r["last_progress"] >= since and r.get("progress") is not None:
            return int(r["progress"])
        time.sleep(0.1)


if __name__ == "__main__":
    main()
