"""A run protects what it writes (issue 24): no silent overwrite, one driver per run directory, Ctrl-C
and SIGTERM within 30 s with exit 130, a full disk in one line, flags a topology ignores refused, and a
plan that says the env steps the run will really make. Real processes, real signals, a real small disk."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from ml_collections import ConfigDict

from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import resolve
from deepcrl.rundir.lock import LOCK_NAME, DriverLock, RunDirBusy, live_driver

TINY = ["--env", "point_mass", "--num_envs", "16", "--num_eval_envs", "8", "--batch_size", "64",
        "--critic_width", "32", "--actor_width", "32", "--noprogress"]  # fmt: skip
ENDLESS = [*TINY, "--total_env_steps", "5000000", "--num_evals", "2000"]


def _start(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "launch" / "run.py"), *args, "--run_dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout} s: {what}")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _holder(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / LOCK_NAME).read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


def _one_error_line(res, needle: str) -> str:
    assert res.returncode == 2, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    res = run_cli(*TINY, "--total_env_steps", "6000", "--num_evals", "2", "--run_dir", str(run_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


def test_a_new_run_into_a_run_directory_is_refused_and_overwrite_moves_the_old_run_aside(finished_run, tmp_path):
    before = _snapshot(finished_run)
    res = run_cli("--env", "point_mass_walls", "--total_env_steps", "3000", "--run_dir", str(finished_run))
    line = _one_error_line(res, "already holds a finished single run on point_mass")
    assert "--overwrite" in line and "--resume" not in line  # a finished run has nothing to resume
    assert _snapshot(finished_run) == before  # nothing touched
    # --overwrite moves the old run aside (never deletes it) and starts a new one in its place.
    copy = tmp_path / "run"
    os.rename(finished_run, copy)  # work on a copy: the fixture's run is shared
    try:
        res = run_cli(*TINY, "--total_env_steps", "3000", "--num_evals", "1", "--run_dir", str(copy), "--overwrite")
        assert res.returncode == 0, res.stderr[-3000:]
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
        assert len(aside) == 1 and "moved a finished single run" in res.stderr
        assert _snapshot(aside[0]) == before  # the old run, whole
        assert json.loads((copy / "config.json").read_text())["total_env_steps"] == 3000
    finally:
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
        os.rename(aside[0] if aside else copy, finished_run)


def test_a_second_driver_is_refused_and_ctrl_c_or_sigterm_stop_the_live_one_with_exit_130(tmp_path):
    """A live run: a second --resume, a new run and --overwrite into it are refused naming its host and
    PID; then SIGINT (Ctrl-C) stops it within 30 s, exit 130, no traceback, the resume command printed.
    A resumed run stopped by SIGTERM (a scheduler's preemption) the same; a killed driver's lock is stale
    and never blocks a resume."""
    run_dir = tmp_path / "run"
    proc = _start(run_dir, *ENDLESS)
    try:
        _wait_for(lambda: (run_dir / "metrics.jsonl").is_file(), 120, "the run trains")
        owner = json.loads((run_dir / LOCK_NAME).read_text())
        assert (owner["host"], owner["pid"]) == (socket.gethostname(), proc.pid)
        asked = time.time()
        for args in (["--resume"], [*TINY], [*TINY, "--overwrite"]):
            res = run_cli(*args, "--run_dir", str(run_dir))
            _one_error_line(res, f"in use by a live driver (host {socket.gethostname()}, PID {proc.pid}")
        refuse_s = (time.time() - asked) / 3
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == proc.pid and proc.poll() is None
        assert not list(tmp_path.glob("run.replaced-*"))  # --overwrite moved nothing
        for sig, args in ((signal.SIGINT, ENDLESS), (signal.SIGTERM, ["--resume", "--noprogress"])):
            if sig == signal.SIGTERM:
                proc = _start(run_dir, *args)
                _wait_for(lambda p=proc: _holder(run_dir) == p.pid, 120, "the resumed driver holds the run")
                time.sleep(5)
            os.killpg(proc.pid, sig)
            asked = time.time()
            _, err = proc.communicate(timeout=60)
            took = time.time() - asked
            assert proc.returncode == 130 and took < 30, (sig, proc.returncode, took, err[-2000:])
            assert f"--resume --run_dir {run_dir}" in err and "Traceback" not in err, err[-3000:]
        # A driver killed -9 leaves its lock file, but the lock died with it: a resume is not blocked.
        proc = _start(run_dir, "--resume", "--noprogress")
        _wait_for(lambda: _holder(run_dir) == proc.pid, 120, "the third driver holds the run")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert live_driver(run_dir) is None
        res = run_cli("--resume", "--run_dir", str(run_dir), "--dry_run")
        assert res.returncode == 0, res.stderr[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"second driver refused in {refuse_s:.1f} s (a whole CLI start), Ctrl-C/SIGTERM to exit: {took:.1f} s")


@pytest.mark.core
def test_a_lock_another_host_keeps_touching_counts_as_live(tmp_path):
    """Where file locks do not cross hosts (some NFS), a lock file of another host touched within
    STALE_S is a live driver; an old one is stale. Our own lock refuses a second holder in-process."""
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "gpu-node-7", "pid": 4242, "started": time.time()}))
    assert "host gpu-node-7, PID 4242" in live_driver(tmp_path)
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    assert live_driver(tmp_path) is None
    with DriverLock(tmp_path / "r"):
        with pytest.raises(RunDirBusy, match=f"PID {os.getpid()}"):
            DriverLock(tmp_path / "r").acquire()
    assert live_driver(tmp_path / "r") is None


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--topology", "collector_deep_learner_shallow", "--critic_depth", "8"], "--critic_depth is not used by topology collector_deep_learner_shallow"),
        (["--topology", "single", "--learner_depths", "4,32"], "--learner_depths is not used by topology single"),
        (["--collector_depth", "64"], "--collector_depth is not used by topology single"),
        (["--set", "collector_width=8"], "--collector_width is not used by topology single"),
        (["--run_dir", "/proc/x"], "/proc/x cannot be created"),
        (["--set", "critic_lr=0"], "critic_lr must be a positive learning rate"),
        (["--set", "actor_lr=-0.001"], "actor_lr must be a positive learning rate"),
        (["--resume", "--overwrite", "--run_dir", "/tmp"], "not both"),
    ],
)  # fmt: skip
def test_inputs_that_slipped_are_one_line_and_exit_2(args, needle, tmp_path):
    res = run_cli(*args, *([] if "--run_dir" in args else ["--run_dir", str(tmp_path / "r")]), "--dry_run")
    _one_error_line(res, needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.core
def test_the_plan_says_each_role_and_the_env_steps_really_made():
    res = run_cli("--topology", "decoupling", "--total_env_steps", "50000", "--collector_width", "32", "--dry_run")
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "  collector_learner: critic depth 32 width 32, actor depth 32 width 32 (acts in the collector)" in out
    assert "  learner2_d4: critic depth 4 width 64, actor depth 4 width 64" in out
    layout = resolve(ConfigDict({**get_config().to_dict(), "topology": "decoupling", "total_env_steps": 50000})).layout
    assert layout.total_env_steps == 76_800
    assert "50,000 env steps asked -> 76,800: whole epochs (10 epochs of 2 collection steps" in out
    assert "device: cpu" in out and "disk: writes up to" in out


@pytest.mark.core
def test_the_rate_limiter_grants_the_update_to_data_ratio_of_single():
    """Per collection step ``single`` makes ``num_minibatches`` updates from ``segments_per_round``
    segments; the default limiter grants exactly that many samples per collection step's inserts."""
    for over in ({}, {"num_envs": 24, "unroll_length": 30, "batch_size": 96, "num_minibatches": 5},
                 {"env": "point_mass_walls", "num_minibatches": 0}):  # fmt: skip
        exp = resolve(ConfigDict({**get_config().to_dict(), "topology": "decoupling", **over}))
        c, seg = exp.config, exp.layout.segment_length
        inserted = c.num_envs * c.unroll_length / seg  # segments per collection step
        for table in exp.replay.tables:
            assert table.samples_per_insert * inserted == pytest.approx(exp.segments_per_round), over


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")


def test_a_full_disk_is_one_line_before_and_during_a_run_and_resume_continues(tmp_path):
    """A 4 MiB disk is refused before anything starts, with the figures; on a 32 MiB one the run starts,
    the disk is then filled for real: the run stops with one error line and exit 2, its complete
    checkpoints kept, and once space is freed --resume continues."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "32m")
    try:
        fill = disk / "fill"
        fill.write_bytes(b"\0" * 28 * 2**20)
        res = run_cli(*TINY, "--run_dir", str(disk / "r"))
        _one_error_line(res, "the run writes up to ~")
        assert "free" in res.stderr and "checkpoint=false" in res.stderr and not (disk / "r").exists()
        fill.unlink()
        proc = _start(disk / "r", *ENDLESS)
        _wait_for(lambda: (disk / "r" / "checkpoints" / "latest").is_dir(), 120, "a first checkpoint")
        subprocess.run(["dd", "if=/dev/zero", f"of={fill}", "bs=1M"], capture_output=True)
        _, err = proc.communicate(timeout=120)
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: the disk is full"), err[-3000:]
        assert "--resume" in lines[0] and "MiB free" in lines[0]
        fill.unlink()
        res = run_cli("--resume", "--run_dir", str(disk / "r"), "--total_env_steps", "30000")
        assert res.returncode == 0, res.stderr[-3000:]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_stop_signal_lost_in_a_garbage_collector_callback_still_stops_the_run():
    """Seen in CI: SIGTERM arrived while the main thread ran XLA's garbage-collector callback; Python
    raised the handler's KeyboardInterrupt inside it, printed it as an ignored traceback and went on, and
    the run was ended 25 s later by the watchdog. Here a real SIGINT lands inside a real gc callback:
    nothing is printed as a traceback, and the loop's next ``STOP.check()`` stops it."""
    code = """
import gc, os, signal, sys
from deepcrl.launch.cli import STOP
STOP.install()
def callback(phase, info):
    if phase == "start" and not STOP.requested.is_set():
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # bytecodes: the handler runs here, inside the callback
gc.callbacks.append(callback)
gc.collect()
gc.callbacks.remove(callback)
print("went on after the lost KeyboardInterrupt", flush=True)
try:
    STOP.check()
except KeyboardInterrupt:
    print("stopped by STOP.check()", flush=True)
    sys.exit(130)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 130, (res.returncode, res.stdout, res.stderr)
    assert res.stdout.splitlines() == ["went on after the lost KeyboardInterrupt", "stopped by STOP.check()"]
    assert "Traceback" not in res.stderr and "Ctrl-C: stopping the run" in res.stderr, res.stderr
