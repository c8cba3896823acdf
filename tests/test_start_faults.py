"""A fault while a role is still starting is that role's death, not the run's (issue 24, item 3).

One ``decoupling`` run: the replay is killed -9 while it starts, the collector too, a train-only
learner is killed -9 while it starts and its replacement is frozen (SIGSTOP) while it starts (what ended
the whole run before, through Ray's own "keepalive watchdog timeout"): its process neither answers the
driver's pings nor uses CPU, so it is found within ``role_stall_timeout_s``, not the 900 s a slow compile may take. Every fault lands inside a start:
``DEEPCRL_START_PAUSE`` holds those roles a few seconds as their start begins, and the test injects only
while ``roles.json`` says the role is starting. The run then finishes by itself.
"""

from __future__ import annotations

import json
import os
import signal
import time

from test_faults import TINY, _roles, _start, _wait_for

STALL_S = 10  # role_stall_timeout_s: a starting role silent to the driver's pings this long is frozen


def _starting_pid(run_dir, name: str, not_pid: int | None = None):
    """The role's PID while roles.json says it is starting (None otherwise)."""
    r = _roles(run_dir).get(name) or {}
    pid = r.get("pid")
    return pid if pid and pid != not_pid and r.get("phase") == "starting" else None


def _fault_while_starting(run_dir, proc, name: str, sig: int, not_pid: int | None = None) -> int:
    _wait_for(lambda: _starting_pid(run_dir, name, not_pid), 240, f"{name} starting", proc)
    pid = _starting_pid(run_dir, name, not_pid)
    os.kill(pid, sig)
    return pid


def test_kill_and_freeze_while_starting_restart_or_drop_the_role_and_the_run_finishes(tmp_path, monkeypatch, replay):
    """With max_role_restarts=1: the replay and the collector, killed while starting, are restarted; the
    train-only learner, killed while starting and its replacement frozen while starting, is dropped past
    its one restart, and the run finishes by itself with exit code 0 (issue 24, items 3 and 8)."""
    monkeypatch.setenv("DEEPCRL_START_PAUSE", "replay:8,collector:8,learner2_d4:8")
    run_dir = tmp_path / "run"
    proc = _start(
        run_dir, "--topology", "decoupling", *TINY, "--total_env_steps", "20000", "--num_evals", "2", "--replay", replay,
        "--set", f"role_stall_timeout_s={STALL_S}", "--set", "role_progress_every_s=1", "--set", "max_role_restarts=1",
    )  # fmt: skip
    learner = "learner2_d4"
    try:
        _fault_while_starting(run_dir, proc, "replay", signal.SIGKILL)
        _fault_while_starting(run_dir, proc, "collector", signal.SIGKILL)
        first = _fault_while_starting(run_dir, proc, learner, signal.SIGKILL)
        _fault_while_starting(run_dir, proc, learner, signal.SIGSTOP, not_pid=first)
        frozen = time.time()
        _wait_for(lambda: _roles(run_dir)[learner]["status"] == "dropped", 120, "the frozen learner dropped", proc)
        print(f"SIGSTOP while starting -> found and dropped: {time.time() - frozen:.1f} s")
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert f"note: learner {learner} died again" in err and "the run continues without it" in err, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    roles = summary["roles"]
    assert {n: r["restarts"] for n, r in roles.items()} == {
        "replay": 1, "collector": 1, "collector_learner": 0, "learner1_d4": 0, learner: 1,
    }, roles  # fmt: skip
    assert roles[learner]["status"] == "dropped" and "frozen while starting" in roles[learner]["last_error"]
    assert roles["replay"]["deaths"] == roles["collector"]["deaths"] == roles[learner]["deaths"] == 1
    assert roles[learner]["stalls"] == 1
    # The others finished the run: the collector its env steps, each learner single's updates.
    assert summary["collector"]["env_steps"] == max(r["env_steps"] for r in summary["learners"])
    assert {r["learner"] for r in summary["learners"]} == {"collector_learner", "learner1_d4"}
