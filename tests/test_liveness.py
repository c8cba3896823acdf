"""A role that hangs without dying is found and replaced (issue 16), with real SIGSTOP signals.

One endless ``decoupling`` run on point_mass is frozen: a train-only learner, then the collector and
the replay server together (a role frozen while it starts: ``test_start_faults.py``); a second learner
is paused for less than the limit (slow, not stalled) meanwhile and must be left alone. PIDs come from ``RUN/roles.json``,
so only the run's own processes are touched (its Ray is the session's loopback cluster).
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


def _freeze_and_wait_for_replacement(run_dir, names: tuple[str, ...], proc, slow: str = "") -> dict[str, float]:
    """SIGSTOP the roles at once; wait until the driver has found each stalled and replaced it; the
    seconds each took to be found. ``slow`` is paused meanwhile for half the limit, then let go."""
    pids = {name: _roles(run_dir)[name]["pid"] for name in names}
    for pid in pids.values():
        os.kill(pid, signal.SIGSTOP)
    frozen = time.time()
    if slow:  # slow but alive: paused for less than the limit, it must not be touched
        slow_pid = _roles(run_dir)[slow]["pid"]
        os.kill(slow_pid, signal.SIGSTOP)
        time.sleep(STALL_S / 2)
        os.kill(slow_pid, signal.SIGCONT)
    detected = {}
    for name in names:
        _wait_for(lambda n=name: _roles(run_dir)[n]["stalls"] == 1, STALL_S + 30, f"{name} found stalled", proc)
        detected[name] = time.time() - frozen
    for name, pid in pids.items():
        _wait_for(lambda p=pid: not _alive(p), 10, f"the frozen {name} (PID {pid}) killed for certain")
        _wait_for(
            lambda n=name, p=pid: _roles(run_dir)[n]["status"] == "running" and _roles(run_dir)[n]["pid"] != p,
            START_S + 30, f"{name} replaced", proc,
        )  # fmt: skip
    return detected


@pytest.mark.ray_lane
def test_frozen_roles_are_killed_and_replaced_and_a_slow_one_is_left_alone(tmp_path, replay, shared_ray):
    run_dir = tmp_path / "run"
    proc = _start(
        run_dir, "--topology", "decoupling", *TINY, "--total_env_steps", "100000000", "--num_evals", "100000",
        "--replay", replay, *shared_ray,
        "--set", f"role_stall_timeout_s={STALL_S}", "--set", f"role_start_timeout_s={START_S}",
        "--set", "role_progress_every_s=1",
    )  # fmt: skip
    learner, slow = "learner1_d4", "learner2_d4"
    try:
        _wait_for(
            lambda: len(_progress(run_dir)) == 5 and all(p > 0 for p in _progress(run_dir).values()),
            240, "every role makes progress", proc,
        )
        # A frozen train-only learner: killed and replaced; the others keep going meanwhile, the slow one
        # (paused for half the limit while the learner is frozen) too, and it is left alone.
        before = _progress(run_dir)
        _freeze_and_wait_for_replacement(run_dir, (learner,), proc, slow=slow)
        after = _progress(run_dir)
        for name in ("collector", "collector_learner", slow):
            assert after[name] > before[name], f"{name} stopped while {learner} was frozen: {before} {after}"
        roles = _roles(run_dir)
        assert roles[learner]["restarts"] == 1 and roles[learner]["deaths"] == 0
        assert "no progress" in roles[learner]["last_error"]

        # (A replacement that hangs while it starts: tests/test_start_faults.py.)
        # The collector and the replay server frozen together: both found, both replaced, collection goes on.
        steps = _progress(run_dir)["collector"]
        detected = _freeze_and_wait_for_replacement(run_dir, ("collector", "replay"), proc)
        assert all(s <= STALL_S + 15 for s in detected.values()), detected
        _wait_for(lambda: _progress(run_dir)["collector"] > steps, 120, "collection after both", proc)
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
