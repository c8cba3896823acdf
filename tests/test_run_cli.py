"""``launch/run.py`` as a user runs it: artifacts of a smoke run, and bad input."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_cli
from PIL import Image


@pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)
def test_single_smoke_run_writes_every_artifact(tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli(
        "--topology", "single", "--env", "point_mass", "--run_dir", str(run_dir),
        "--total_env_steps", "20000", "--num_envs", "16", "--num_eval_envs", "8", "--batch_size", "64",
        "--critic_depth", "8", "--actor_depth", "4", "--critic_width", "32", "--actor_width", "32",
        "--num_evals", "3", "--seed", "3", "--set", "num_minibatches=4",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "steps/s" in res.stderr and re.search(r"success [01]\.\d\d", res.stderr)  # the progress line
    config = json.loads((run_dir / "config.json").read_text())
    assert config["critic_depth"] == 8 and config["num_minibatches"] == 4 and config["seed"] == 3
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["updates"] > 0 and 0.0 <= rows[-1]["eval/success"] <= 1.0
    csv_lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) and "eval/success" in csv_lines[0]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "final").is_dir() and any((run_dir / "checkpoints" / "final").iterdir())
    with Image.open(run_dir / "success.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_checkpoint_restores_the_policy(tmp_path):
    """The checkpoint of a smoke run loads back into a working deterministic policy."""
    import numpy as np

    from deepcrl.launch.policy import load_policy

    run_dir = tmp_path / "run"
    res = run_cli(
        "--run_dir", str(run_dir), "--total_env_steps", "5000", "--num_envs", "8", "--num_eval_envs", "4",
        "--batch_size", "32", "--num_evals", "1", "--set", "num_minibatches=2", "--noprogress",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    env_name, _, act = load_policy(run_dir)
    assert env_name == "point_mass"
    actions = np.asarray(act(np.zeros((3, 4), np.float32)))
    assert actions.shape == (3, 2) and np.all(np.abs(actions) <= 1.0)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--env", "moon_lander"], "valid envs: ant"),
        (["--topology", "ring"], "valid topologies: single, actor_learner"),
        (["--critic_depth", "6"], "critic depth must be a positive multiple of 4"),
        (["--actor_depth", "0"], "actor depth must be a positive multiple of 4"),
        (["--num_envs", "-3"], "num_envs must be a positive integer"),
        (["--batch_size", "100000"], "larger than the data available"),
        (["--set", "gamma=abc"], "gamma expects a float"),
        (["--set", "nonsense=1"], "expected key=value with key one of"),
        (["--config", "configs/presets.py:huge"], "unknown preset 'huge'; valid: paper, cpu, default"),
        (["--config", "no/such/file.py"], "config file not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    run_dir = tmp_path / "should_not_exist"
    res = run_cli(*args, "--run_dir", str(run_dir), timeout=120)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert not run_dir.exists()  # nothing was started, nothing half-written


def test_killed_single_run_resumes_from_its_latest_checkpoint(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    run_dir = tmp_path / "run"
    args = [
        "--run_dir", str(run_dir), "--total_env_steps", "60000", "--num_envs", "16", "--num_eval_envs", "8",
        "--batch_size", "64", "--num_evals", "6", "--set", "num_minibatches=8", "--noprogress",
    ]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch" / "run.py"), *args], cwd=ROOT)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.wait()
    assert not (run_dir / "complete.json").exists()
    written = metrics.read_text()
    for change in (["--set", "num_seeds=2"], ["--critic_depth", "8"]):  # the checkpoints would not fit
        res = run_cli(*args, *change, "--resume")
        assert res.returncode == 2 and "--resume cannot change" in res.stderr, res.stderr[-2000:]
        assert "Traceback" not in res.stderr and metrics.read_text() == written
    res = run_cli(*args, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    epochs = [r["epoch"] for r in rows]
    assert epochs == list(range(7)), epochs  # no epoch lost or duplicated
    updates = [r["updates"] for r in rows]
    assert updates == sorted(updates) and updates[-1] == 6 * updates[1]  # training continued, not restarted
    assert json.loads((run_dir / "complete.json").read_text())["epoch"] == 6
