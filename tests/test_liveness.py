"""A role that hangs without dying is found and replaced (issue 16), with real SIGSTOP signals.

One endless ``decoupling`` run on point_mass is frozen role by role: a train-only learner, the
collector and the replay server (a role frozen while it starts: ``test_start_faults.py``); a second learner is paused for
less than the limit (slow, not stalled) and must be left alone. PIDs come from ``RUN/roles.json``;
Ray is the run's own embedded instance, so no other process on the machine is touched.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from test_faults import TINY, _alive, _end_with_ctrl_c, _roles, _rows, _start, _wait_for

STALL_S, START_S = 10, 90  # the run's role_stall_timeout_s / role_start_timeout_s


def _progress(run_dir) -> dict[str, int]:
    return {n: r.get("progress") or 0 for n, r in _roles(run_dir).items()}


def _freeze_and_wait_for_replacement(run_dir, name: str, proc, stalls: int) -> tuple[int, float]:
    """SIGSTOP the role; wait until the driver has replaced it; (old PID, seconds to detect)."""
    pid = _roles(run_dir)[name]["pid"]
    os.kill(pid, signal.SIGSTOP)
    frozen = time.time()
    _wait_for(lambda: _roles(run_dir)[name]["stalls"] == stalls, STALL_S + 30, f"{name} found stalled", proc)
    detected = time.time() - frozen
    _wait_for(lambda: not _alive(pid), 10, f"the frozen {name} (PID {pid}) killed for certain")
    _wait_for(
        lambda: _roles(run_dir)[name]["status"] == "running" and _roles(run_dir)[name]["pid"] != pid,
        START_S + 30, f"{name} replaced", proc,
    )  # fmt: skip
    return pid, detected


@pytest.mark.ray_lane
def test_frozen_roles_are_killed_and_replaced_and_a_slow_one_is_left_alone(tmp_path, replay):
    run_dir = tmp_path / "run"
    proc = _start(
        run_dir, "--topology", "decoupling", *TINY, "--total_env_steps", "100000000", "--num_evals", "100000",
        "--replay", replay,
        "--set", f"role_stall_timeout_s={STALL_S}", "--set", f"role_start_timeout_s={START_S}",
        "--set", "role_progress_every_s=1",
    )  # fmt: skip
    learner, slow = "learner1_d4", "learner2_d4"
    try:
        _wait_for(
            lambda: len(_progress(run_dir)) == 5 and all(p > 0 for p in _progress(run_dir).values()),
            240, "every role makes progress", proc,
        )
        # Slow but alive: paused for less than the limit, it must not be touched.
        slow_pid = _roles(run_dir)[slow]["pid"]
        os.kill(slow_pid, signal.SIGSTOP)
        time.sleep(STALL_S / 2)
        os.kill(slow_pid, signal.SIGCONT)

        # A frozen train-only learner: killed and replaced; the others keep going meanwhile.
        before = _progress(run_dir)
        _freeze_and_wait_for_replacement(run_dir, learner, proc, stalls=1)
        after = _progress(run_dir)
        for name in ("collector", "collector_learner", slow):
            assert after[name] > before[name], f"{name} stopped while {learner} was frozen: {before} {after}"
        roles = _roles(run_dir)
        assert roles[learner]["restarts"] == 1 and roles[learner]["deaths"] == 0
        assert "no progress" in roles[learner]["last_error"]

        # (A replacement that hangs while it starts: tests/test_start_faults.py.)
        # The collector, then the replay server: the same.
        for name in ("collector", "replay"):
            _, detected = _freeze_and_wait_for_replacement(run_dir, name, proc, stalls=1)
            assert detected <= STALL_S + 15, (name, detected)
            steps = _progress(run_dir)["collector"]
            _wait_for(lambda s=steps: _progress(run_dir)["collector"] > s, 120, f"collection after {name}", proc)
        summary = _end_with_ctrl_c(proc, run_dir)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    roles = summary["roles"]
    assert {n: r["stalls"] for n, r in roles.items()} == {
        "replay": 1, "collector": 1, "collector_learner": 0, learner: 1, slow: 0,
    }  # fmt: skip
    assert roles[learner]["deaths"] == 0 and roles[slow]["restarts"] == 0
    assert "| stalls |" in (run_dir / "summary.md").read_text()
    for name in ("collector", "collector_learner", learner, slow):
        steps = [r["env_steps"] for r in _rows(run_dir / name / "metrics.jsonl")]
        assert steps == sorted(set(steps)), f"{name}: rows at repeated or decreasing env steps {steps}"
    # Every role says where it ran.
    for name, r in json.loads((run_dir / "roles.json").read_text())["roles"].items():
        assert r["node_id"] and r["node"], (name, r)
        if name != "replay":
            assert r["jax_devices"] and r["gpu_ids"] == [], (name, r)
