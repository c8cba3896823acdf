"""Fault tolerance of distributed runs (issue 9), with real faults: kill -9 of real processes.

Every role's PID comes from ``RUN/roles.json``, so only the run's own processes are touched. Ray is the
run's own embedded instance where the test is about it (the driver killed), else the session's loopback
cluster (``shared_ray``, tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli
from metrics_files import assert_csv_equals_jsonl

from deepcrl.buffer import replay_backend
from deepcrl.rundir.checkpoints import restore_train_state

TINY = [
    "--env", "point_mass", "--num_envs", "8", "--num_eval_envs", "4", "--batch_size", "32",
    "--critic_width", "16", "--actor_width", "16", "--noprogress", "--set", "num_minibatches=2",
    "--set", "deep_depth=4", "--set", "min_replay_steps_per_env=100", "--set", "unroll_length=25",
    "--set", "checkpoint_every_s=1", "--set", "replay_checkpoint_every_s=2",
]  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def _roles(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "roles.json").read_text())["roles"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def _wait_for(predicate, timeout: float, what: str, proc=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"run ended (rc {proc.returncode}) before: {what}\n{proc.stderr.read()[-3000:]}"
            )
        time.sleep(0.3)
    raise AssertionError(f"not reached within {timeout} s: {what}")


def _start(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "launch" / "run.py"), *args, "--run_dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )  # fmt: skip


def _end_with_ctrl_c(proc: subprocess.Popen, run_dir: Path) -> dict:
    """End an endless run the way a user does (Ctrl-C to its process group); its summary. It stops
    within 30 s with exit code 130, no traceback, and says how to resume."""
    os.killpg(proc.pid, signal.SIGINT)
    asked = time.time()
    _, err = proc.communicate(timeout=300)
    took = time.time() - asked
    assert proc.returncode == 130, err[-3000:]
    assert took < 30, f"Ctrl-C took {took:.1f} s"
    assert f"--resume --run_dir {run_dir}" in err and "Traceback" not in err, err[-3000:]
    print(f"Ctrl-C of a distributed run -> exit 130: {took:.1f} s")
    return json.loads((run_dir / "summary.json").read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(")")[-1].split()[0] != "Z"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _assert_resumed(before: list[str], after: list[str], resumed_from: int, name: str) -> None:
    """A restarted learner kept the rows up to its checkpoint byte for byte and went on from the
    checkpoint's update count (a learner that ignored its checkpoint would start again at 0)."""
    kept = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), len(before))
    assert kept >= max(2, len(before) - 1), f"{name}: rows before the kill lost ({kept} of {len(before)} kept)"
    assert after[:kept] == before[:kept]
    last_kept, first_new = json.loads(after[kept - 1]), json.loads(after[kept])
    assert resumed_from >= last_kept["updates"] > 0, (name, resumed_from, last_kept)
    assert first_new["updates"] > resumed_from, (name, resumed_from, first_new)


def _assert_no_duplicate_rows(rows: list[dict], name: str) -> None:
    keys = [(r["updates"], r["rounds"], r["samples_drawn"], r["env_steps"]) for r in rows]
    assert len(set(keys)) == len(keys), f"{name}: duplicated metric rows {keys}"
    updates = [r["updates"] for r in rows]
    assert updates == sorted(updates), f"{name}: updates went back {updates}"


# ----------------------------------------------------------------------------- atomic checkpoints

_SAVER = """
import sys, numpy as np
from deepcrl.rundir.checkpoints import save_train_state
path = sys.argv[1]
for version in range(int(sys.argv[2]), int(sys.argv[3])):
    save_train_state(path, {"version": np.asarray(version), "w": np.full((64, 64), version, np.float32)})
    print(f"saved {version}", flush=True)
"""


def _save(path: Path, first: int, last: int, pause_at: str = "") -> subprocess.Popen:
    env = {**os.environ, "DEEPCRL_CHECKPOINT_PAUSE_AT": pause_at}
    return subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(path), str(first), str(last)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip


def _restore_version(path: Path) -> int:
    target = {"version": np.asarray(0), "w": np.zeros((64, 64), np.float32)}
    saved = restore_train_state(path, target)
    assert np.all(saved["w"] == saved["version"])  # a whole checkpoint, not a mix
    return int(saved["version"])


@pytest.mark.parametrize("pause_at", ["before_swap", "between_renames"])
def test_checkpoint_killed_during_a_write_restores_the_previous_one(tmp_path, pause_at):
    path = tmp_path / "checkpoints" / "latest"
    first = _save(path, 1, 2)
    assert first.wait(timeout=120) == 0
    # The second save stops at `pause_at` (after writing its data, before or halfway through the swap).
    proc = _save(path, 2, 3, pause_at=pause_at)
    try:
        lines = [proc.stdout.readline() for _ in range(1)]
        assert lines[0].startswith(f"checkpoint paused at {pause_at}"), lines
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert _restore_version(path) == 1
    again = _save(path, 3, 4)  # the next save cleans up and replaces it
    assert again.wait(timeout=120) == 0
    assert _restore_version(path) == 3
    # No temporary folder left; the previous complete checkpoint (version 1) is kept beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest", "latest.old"]
    assert _restore_version(path.with_name("latest.old")) == 1


def test_checkpoint_killed_at_a_random_instant_of_a_save_loop(tmp_path):
    path = tmp_path / "latest"
    proc = _save(path, 1, 10_000)
    try:
        assert proc.stdout.readline().startswith("saved 1")
        time.sleep(1.3)  # the loop saves all the time: the kill lands inside some save
        os.kill(proc.pid, signal.SIGKILL)
        out = proc.stdout.read()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    confirmed = max([1] + [int(line.split()[1]) for line in out.splitlines() if line.startswith("saved")])
    assert _restore_version(path) in (confirmed, confirmed + 1)


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--gpus_per_learner", "-1"], "gpus_per_learner must be >= 0"),
        (["--set", "samples_per_insert=-3"], "samples_per_insert must be >= 0"),
        (["--set", "samples_per_insert=nan"], "samples_per_insert must be a finite number"),
        (["--set", "max_role_restarts=-1"], "max_role_restarts must be >= 0"),
        (["--cpus_per_role", "0"], "cpus_per_role must be > 0"),
        (["--gpus_per_collector", "1.5"], "whole number of GPUs"),
    ],
)
def test_bad_numeric_distributed_inputs_exit_2(tmp_path, args, needle):
    res = run_cli("--topology", "decoupling", *args, "--run_dir", str(tmp_path / "r"), timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_a_topology_bigger_than_the_cluster_exits_2_before_launch(tmp_path):
    # The embedded Ray has max(cores, 8) CPUs; 5 roles (replay, collector, 3 learners) x 100 CPUs cannot.
    res = run_cli(
        "--topology", "decoupling", *TINY, "--cpus_per_role", "100", "--run_dir", str(tmp_path / "r"),
        timeout=240,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr[-2000:]
    assert "needs 500 CPUs" in errors[0] and "the Ray cluster has" in errors[0], errors[0]
    assert not (tmp_path / "r" / "roles.json").exists()  # no actor was created


# ----------------------------------------------------------------------------- role restarts


def test_kill_9_of_a_train_only_learner_restarts_it_and_the_run_goes_on(tmp_path, replay, shared_ray):
    run_dir = tmp_path / "run"
    name = "learner1_d4"
    proc = _start(
        run_dir, "--topology", "decoupling", *TINY, "--total_env_steps", "100000000", "--num_evals", "100000",
        "--replay", replay, *shared_ray,
    )  # fmt: skip
    try:
        ckpt = run_dir / name / "checkpoints" / "latest"
        _wait_for(
            lambda: _roles(run_dir).get(name, {}).get("status") == "running"
            and len(_rows(run_dir / name / "metrics.jsonl")) >= 3 and ckpt.exists(),
            timeout=300, what="the learner trains and checkpoints", proc=proc,
        )  # fmt: skip
        victim = _roles(run_dir)[name]["pid"]
        steps_at_kill = json.loads((run_dir / "collector" / "checkpoint.json").read_text())["env_steps"]
        os.kill(victim, signal.SIGKILL)
        before = _lines(run_dir / name / "metrics.jsonl")
        _wait_for(lambda: _roles(run_dir)[name]["restarts"] == 1, 60, "the driver sees the death", proc)
        # While it is down its table is drained: the collector is not held back by its rate limiter.
        _wait_for(
            lambda: json.loads((run_dir / "collector" / "checkpoint.json").read_text())["env_steps"]
            > steps_at_kill + 2000,
            timeout=120, what="the collector keeps collecting", proc=proc,
        )  # fmt: skip
        _wait_for(lambda: _roles(run_dir)[name]["status"] == "running", 300, "the learner is back", proc)
        role = _roles(run_dir)[name]
        assert role["pid"] != victim and role["last_error"], role
        updates_back = _rows(run_dir / name / "metrics.jsonl")[-1]["updates"]
        _wait_for(
            lambda: _rows(run_dir / name / "metrics.jsonl")[-1]["updates"] > updates_back,
            timeout=300, what="the restarted learner trains on", proc=proc,
        )  # fmt: skip
        _assert_resumed(before, _lines(run_dir / name / "metrics.jsonl"), role["resumed_from"], name)
        summary = _end_with_ctrl_c(proc, run_dir)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert {r["learner"] for r in summary["learners"]} == {"collector_learner", name, "learner2_d4"}
    assert summary["roles"][name]["restarts"] == 1 and summary["roles"]["collector_learner"]["restarts"] == 0
    rows = _rows(run_dir / name / "metrics.jsonl")
    _assert_no_duplicate_rows(rows, name)
    assert rows[-1]["updates"] > updates_back
    table = summary["replay_tables"][name]
    assert table.get("drained_while_down", 0) > 0
    # Counts stay consistent: every insert is in the table or was evicted (FIFO), none appeared twice.
    assert table["num_inserts"] == summary["replay_tables"]["collector_learner"]["num_inserts"]
    assert summary["collector"]["segments_lost"] == 0


@pytest.mark.ray_lane
def test_kill_9_of_the_driver_then_resume_continues_counters_and_metrics(tmp_path, replay):
    run_dir = tmp_path / "run"
    # Long enough that the kill below lands well before the end, even on a fast machine: the roles outlive
    # their killed driver by a few seconds and go on collecting meanwhile, ~20,000 env steps/s on the
    # latest lane with the Ray backend (seen in CI: 114,000 of 150,000 steps before they stopped).
    total = 150_000 if replay == "reverb" else 600_000
    args = ["--topology", "actor_learner", *TINY, "--total_env_steps", str(total), "--num_evals", "20", "--replay", replay]
    proc = _start(run_dir, *args)
    name = "collector_learner"
    try:
        _wait_for(
            lambda: len(_rows(run_dir / name / "metrics.jsonl")) >= 2
            and (run_dir / name / "checkpoints" / "latest").exists()
            and len(replay_backend.load(replay).restorable(run_dir / "replay")) >= 2,  # two replay checkpoints
            timeout=300, what="learner and replay checkpoints", proc=proc,
        )  # fmt: skip
        roles = _roles(run_dir)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only; its embedded Ray goes down with it
        proc.wait(timeout=30)
        pids = [r["pid"] for r in roles.values() if r["pid"]]
        _wait_for(lambda: not any(_alive(p) for p in pids), 60, "the roles die with their driver")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Random bytes over the data of the latest replay checkpoint: the replay restores the previous one
    # with one warning line naming it, and the run goes on (issue 24, item 11).
    damaged = replay_backend.load(replay).restorable(run_dir / "replay")[0]  # the latest
    data = max((f for f in damaged.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)  # its largest file
    data.write_bytes(os.urandom(data.stat().st_size))
    before = {n: _rows(run_dir / n / "metrics.jsonl") for n in (name, "collector")}
    assert before["collector"][-1]["env_steps"] < total * 3 // 4, "the first run was not interrupted early"

    res = run_cli("--resume", "--run_dir", str(run_dir), timeout=600)  # no other flag: config.json is used
    assert res.returncode == 0, res.stderr[-4000:]
    warned = [line for line in res.stderr.splitlines() if "warning: replay checkpoint" in line]
    assert len(warned) == 1 and f"{damaged} is damaged ({data.relative_to(damaged)} has corrupted bytes" in warned[0], warned
    assert "restored the previous one" in warned[0] and (run_dir / "replay.damaged" / damaged.name).is_dir(), warned
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["collector"]["env_steps"] >= total
    collector_rows = _rows(run_dir / "collector" / "metrics.jsonl")
    steps = [r["env_steps"] for r in collector_rows]
    assert steps == sorted(set(steps)), f"collector rows duplicated or out of order: {steps}"
    assert steps[-1] >= total
    rows = _rows(run_dir / name / "metrics.jsonl")
    _assert_no_duplicate_rows(rows, name)
    assert rows[-1]["updates"] > max(r["updates"] for r in before[name])
    assert rows[0] == before[name][0]  # rows up to the checkpoint are kept as they were
    # One row per moment, across the resume: strictly increasing env steps.
    learner_steps = [r["env_steps"] for r in rows]
    assert learner_steps == sorted(set(learner_steps)), f"learner env steps repeat or go back: {learner_steps}"
    # The collector's count as seen by the learner follows the collector, also across the replay's restore
    # from an older checkpoint than the learner's and the collector's: it ends where the collector did
    # (up to the partial segments the collector held when it was killed and at the end: 400 steps each).
    seen = [r["collector_env_steps"] for r in rows]
    assert abs(seen[-1] - summary["collector"]["env_steps"]) <= 1_000, seen
    # wall_time goes on across the resume (each role's from its checkpoint); metrics.csv holds every row.
    for folder in (name, "collector"):
        walls = [r["wall_time"] for r in assert_csv_equals_jsonl(run_dir / folder)]
        assert walls == sorted(walls) and walls[-1] > before[folder][-1]["wall_time"], (folder, walls)


@pytest.mark.ray_lane
def test_kill_9_of_the_collector_then_the_replay_then_the_driving_learner(tmp_path, replay, shared_ray):
    """One actor_learner run (on the session's Ray cluster) survives each of its roles being killed in turn."""
    run_dir = tmp_path / "run"
    name = "collector_learner"
    proc = _start(
        run_dir, "--topology", "actor_learner", *TINY, "--total_env_steps", "100000000", "--num_evals", "100000",
        "--replay", replay, *shared_ray,
    )  # fmt: skip

    def record() -> dict:
        try:
            return json.loads((run_dir / "collector" / "checkpoint.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def kill(role: str) -> dict:
        os.kill(_roles(run_dir)[role]["pid"], signal.SIGKILL)
        _wait_for(
            lambda: _roles(run_dir)[role]["restarts"] == 1 and _roles(run_dir)[role]["status"] == "running",
            timeout=300, what=f"{role} is back", proc=proc,
        )  # fmt: skip
        return _roles(run_dir)[role]

    try:
        _wait_for(
            lambda: len(_rows(run_dir / name / "metrics.jsonl")) >= 3 and any((run_dir / "replay").glob("*")),
            timeout=300, what="training with a replay checkpoint", proc=proc,
        )  # fmt: skip
        steps = record()["env_steps"]
        back = kill("collector")  # resumes its env-step counter (its last record), and collects on
        assert back["resumed_from"] >= steps > 0, (back, steps)
        _wait_for(lambda: record()["env_steps"] > steps + 1000, 120, "the collector collects again", proc)

        updates = _rows(run_dir / name / "metrics.jsonl")[-1]["updates"]
        back = kill("replay")  # same port, from its checkpoint: the learner samples again
        assert back["resumed_from"] > 0, f"the replay came back with empty tables: {back}"
        _wait_for(
            lambda: _rows(run_dir / name / "metrics.jsonl")[-1]["updates"] > updates + 10,
            timeout=120, what="the learner trains after the replay restart", proc=proc,
        )  # fmt: skip

        version = _rows(run_dir / "collector" / "metrics.jsonl")[-1]["params_version"]
        steps = record()["env_steps"]
        os.kill(_roles(run_dir)[name]["pid"], signal.SIGKILL)
        before = _lines(run_dir / name / "metrics.jsonl")
        # The collector keeps acting with the parameters it has while its learner is down ...
        _wait_for(lambda: record()["env_steps"] > steps + 1000, 120, "the collector acts on", proc)
        _wait_for(lambda: _roles(run_dir)[name]["status"] == "running", 300, "the learner is back", proc)
        back = _rows(run_dir / name / "metrics.jsonl")[-1]["updates"]
        # ... then picks up the restarted learner's.
        _wait_for(
            lambda: _rows(run_dir / name / "metrics.jsonl")[-1]["updates"] > back
            and _rows(run_dir / "collector" / "metrics.jsonl")[-1]["params_version"] not in (0, version),
            timeout=300, what="new parameters reach the collector", proc=proc,
        )  # fmt: skip
        _assert_resumed(before, _lines(run_dir / name / "metrics.jsonl"), _roles(run_dir)[name]["resumed_from"], name)
        summary = _end_with_ctrl_c(proc, run_dir)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert {n: r["restarts"] for n, r in summary["roles"].items()} == {"replay": 1, "collector": 1, name: 1}
    collector, table = summary["collector"], summary["replay_tables"][name]
    assert collector["params_fetch_failures"] > 0
    # Nothing is inserted twice, and the losses (segments queued when the collector died, inserts after
    # the replay's last checkpoint, at most 2 s before its kill) are a small part of the run.
    assert table["num_inserts"] <= collector["segments_written"]
    assert collector["segments_lost"] < 0.2 * collector["segments_written"], collector
    _assert_no_duplicate_rows(_rows(run_dir / name / "metrics.jsonl"), name)
    # The learner's x-axis follows the collector's count across the replay's restore (which rewinds
    # the table's insert count to its checkpoint): it ends where the collector did, give or take the
    # segments in flight when the counts were aligned (writer queue + unconfirmed items, < 4000 steps here).
    last = _rows(run_dir / name / "metrics.jsonl")[-1]
    seen = last["collector_env_steps"]
    assert abs(collector["env_steps"] - seen) <= 4_000, (seen, collector["env_steps"])
