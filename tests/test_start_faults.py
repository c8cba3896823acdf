"""A fault while a role is still starting is that role's death, not the run's (issue 24, item 3).

One endless ``decoupling`` run: the replay is killed -9 while it starts, the collector too, a train-only
learner is killed -9 while it starts and its replacement is frozen (SIGSTOP) while it starts (what ended
the whole run before, through Ray's own "keepalive watchdog timeout"): its process neither answers the
driver's pings nor uses CPU, so it is found within ``role_stall_timeout_s``, not the 900 s a slow compile may take. Every fault lands inside a start:
``DEEPCRL_START_PAUSE`` holds those roles a few seconds as their start begins, and the test injects only
while ``roles.json`` says the role is starting. The run then goes on and ends with Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import time

from test_faults import TINY, _end_with_ctrl_c, _roles, _start, _wait_for

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


def test_kill_and_freeze_while_starting_restart_the_role_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPCRL_START_PAUSE", "replay:8,collector:8,learner2_d4:8")
    run_dir = tmp_path / "run"
    proc = _start(
        run_dir, "--topology", "decoupling", *TINY, "--total_env_steps", "100000000", "--num_evals", "100000",
        "--set", f"role_stall_timeout_s={STALL_S}", "--set", "role_progress_every_s=1", "--set", "max_role_restarts=3",
    )  # fmt: skip
    learner = "learner2_d4"
    try:
        _fault_while_starting(run_dir, proc, "replay", signal.SIGKILL)
        collector = _fault_while_starting(run_dir, proc, "collector", signal.SIGKILL)
        first = _fault_while_starting(run_dir, proc, learner, signal.SIGKILL)
        # Its replacement hangs while it starts: killed for certain and replaced (a stall, not the run's end).
        _fault_while_starting(run_dir, proc, learner, signal.SIGSTOP, not_pid=first)
        frozen = time.time()
        _wait_for(lambda: _roles(run_dir)[learner].get("stalls") == 1, 120, "the frozen start found", proc)
        _wait_for(lambda: _roles(run_dir)[learner]["status"] == "running", 300, "its replacement started", proc)
        print(f"SIGSTOP while starting -> replacement running: {time.time() - frozen:.1f} s")
        _wait_for(lambda: (_roles(run_dir)[learner].get("progress") or 0) > 0, 300, f"{learner} trains", proc)
        _wait_for(lambda: _roles(run_dir)["collector"]["pid"] not in (None, collector), 240, "a new collector", proc)
        _wait_for(lambda: all((r.get("progress") or 0) > 0 for r in _roles(run_dir).values()), 240, "all train", proc)
        summary = _end_with_ctrl_c(proc, run_dir)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    roles = summary["roles"]
    assert {n: r["restarts"] for n, r in roles.items()} == {
        "replay": 1, "collector": 1, "collector_learner": 0, "learner1_d4": 0, learner: 2,
    }, roles  # fmt: skip
    assert roles["replay"]["deaths"] == roles["collector"]["deaths"] == 1
    assert roles[learner]["deaths"] == roles[learner]["stalls"] == 1  # killed, then frozen: a stall
    assert "frozen while starting" in roles[learner]["last_error"]
