"""``launch/run.py`` as a user runs it: artifacts of a smoke run, and bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import ROOT, run_cli
from metrics_files import assert_csv_equals_jsonl
from ml_collections import ConfigDict
from PIL import Image
from restore_spy import (
    assert_trees_bitwise_equal,
    complete_lines,
    load_recorded,
    run_cli_recording_restore,
)

import deepcrl
from deepcrl import envs
from deepcrl.configs.defaults import TOPOLOGIES
from deepcrl.configs.experiment import resolve
from deepcrl.learner.agent import make_agent
from deepcrl.rundir.checkpoints import restore_train_state


def tensorboard_values(folder: Path):
    """``(step, summary value)`` of every summary in a folder's event files, read back from the bytes.

    An event file is a TFRecord stream (u64 length, u32 CRC, payload, u32 CRC) of ``Event`` protos;
    tensorboardX (a core dependency) ships the proto, so this runs without TensorFlow or TensorBoard.
    """
    from tensorboardX.proto import event_pb2

    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                yield event.step, value


def tensorboard_scalars(folder: Path) -> dict[tuple[str, int], float]:
    """``{(tag, step): value}`` of every scalar (the hparams records left out)."""
    return {(v.tag, step): v.simple_value for step, v in tensorboard_values(folder) if not v.tag.startswith("_hparams_/")}


def tensorboard_hparams(folder: Path) -> dict:
    """The hparams of the session-start record in a folder's event files (TensorBoard's HParams tab)."""
    from tensorboardX.proto import plugin_hparams_pb2

    found = {}
    for _, value in tensorboard_values(folder):
        if value.tag == "_hparams_/session_start_info":
            info = plugin_hparams_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
            found.update({k: getattr(v, v.WhichOneof("kind")) for k, v in info.session_start_info.hparams.items()})
    return found


def _agent_of(run_dir: Path):
    config = ConfigDict(json.loads((run_dir / "config.json").read_text()))
    return make_agent(resolve(config).agent)


@pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)
def test_single_smoke_run_writes_every_artifact(tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli(
        "--topology", "single", "--env", "point_mass", "--run_dir", str(run_dir),
        "--total_env_steps", "20000", "--num_envs", "16", "--num_eval_envs", "8", "--batch_size", "64",
        "--critic_depth", "8", "--actor_depth", "4", "--critic_width", "32", "--actor_width", "32",
        "--num_evals", "3", "--seed", "3", "--set", "num_minibatches=4", "--tag", "smoke-1",
        "--notes", "the smoke test's run",
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
    # TensorBoard holds every float of every row, at its env step, as float32: nothing else.
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    logged = {(k, r["env_steps"]): v for r in rows for k, v in r.items() if isinstance(v, float)}
    last = rows[-1]["env_steps"]
    assert {("eval/success", last), ("critic/loss", last)} <= logged.keys()
    assert scalars.keys() == logged.keys()
    bad = [(k, v, scalars[k]) for k, v in logged.items() if scalars[k] != np.float32(v)]
    assert not bad, bad[:5]
    # The config as hparams (issue 27): the tag, the notes and the settings, as given.
    hparams = tensorboard_hparams(run_dir / "tensorboard")
    assert hparams["tag"] == "smoke-1" and hparams["notes"] == "the smoke test's run"
    assert hparams["critic_depth"] == 8 and hparams["env"] == "point_mass" and hparams["num_minibatches"] == 4
    # The summary every topology writes (rundir/layout.py): this run's one agent, in the run directory.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["topology"] == "single" and summary["tag"] == "smoke-1" and len(summary["learners"]) == 1
    learner = summary["learners"][0]
    assert learner["folder"] == "." and learner["critic_depth"] == 8 and learner["seed"] == 3
    assert {k: learner[k] for k in ("updates", "env_steps", "eval/success")} == {
        k: rows[-1][k] for k in ("updates", "env_steps", "eval/success")}  # fmt: skip
    assert "tag: `smoke-1`" in (run_dir / "summary.md").read_text()
    # The checkpoint holds the agent that made the last row; complete.json is that row.
    agent = _agent_of(run_dir)
    fresh = agent.init(jax.random.PRNGKey(0))
    final = restore_train_state(run_dir / "checkpoints" / "final", fresh)
    latest = restore_train_state(run_dir / "checkpoints" / "latest", fresh)  # the resume state's agent
    assert int(final.step) == rows[-1]["updates"] > 0
    assert_trees_bitwise_equal(final, latest)
    assert json.loads((run_dir / "complete.json").read_text()) == rows[-1]
    with Image.open(run_dir / "success.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_checkpoint_restores_the_policy(tmp_path):
    """The checkpoint of a smoke run loads back into the deterministic policy it trained."""
    run_dir = tmp_path / "run"
    res = run_cli(
        "--run_dir", str(run_dir), "--total_env_steps", "5000", "--num_envs", "8", "--num_eval_envs", "4",
        "--batch_size", "32", "--num_evals", "1", "--set", "num_minibatches=2", "--noprogress",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    run = deepcrl.load(run_dir)
    assert str(run.config.env) == "point_mass" and run.checkpoint == run_dir / "checkpoints" / "final"
    obs = np.random.default_rng(0).uniform(-1, 1, (16, 4)).astype(np.float32)
    actions = np.asarray(run.policy()(obs, None))
    assert actions.shape == (16, 2) and np.all(np.abs(actions) <= 1.0)
    # The trained parameters, not freshly initialised ones (what a restore that did nothing would give).
    agent = _agent_of(run_dir)
    act_with = jax.jit(lambda actor, o: agent.act(actor, o, deterministic=True))
    saved = restore_train_state(run_dir / "checkpoints" / "final", agent.init(jax.random.PRNGKey(0)))
    assert int(saved.step) > 0
    # (run.policy() runs op by op, the reference jitted: float32 rounding apart, 3e-7 seen)
    np.testing.assert_allclose(actions, act_with(saved.actor, obs), rtol=1e-5, atol=1e-6)
    for seed in (0, 1):
        fresh = np.asarray(act_with(agent.init(jax.random.PRNGKey(seed)).actor, obs))
        assert np.abs(actions - fresh).max() > 1e-3, seed


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
        (["--set", "gama=0.9"], "no field 'gama'; did you mean gamma?"),
        (["--env", "point_mas"], "unknown env 'point_mas'; did you mean point_mass? valid envs: ant"),
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
    at_kill = tmp_path / "at_kill"
    shutil.copytree(run_dir, at_kill)
    for change in (["--set", "num_seeds=2"], ["--critic_depth", "8"]):  # the checkpoints would not fit
        res = run_cli(*args, *change, "--resume")
        assert res.returncode == 2 and "--resume cannot change" in res.stderr, res.stderr[-2000:]
        assert "Traceback" not in res.stderr and metrics.read_text() == written
    res = run_cli_recording_restore(*args, "--resume", path=tmp_path / "restored.pkl")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    epochs = [r["epoch"] for r in rows]
    assert epochs == list(range(7)), epochs  # no epoch lost or duplicated
    # Not a silent restart: the rows from before the kill are kept byte for byte, and metrics.csv holds
    # every row of metrics.jsonl with every field (training metrics first appear in epoch 1's row) ...
    assert_csv_equals_jsonl(run_dir)
    before = complete_lines((at_kill / "metrics.jsonl").read_text())
    assert before.count("\n") >= 3  # epochs 0-2
    assert metrics.read_text().startswith(before)
    # ... the resumed run trains from the saved train state, bit for bit ...
    restored = load_recorded(tmp_path / "restored.pkl")
    saved = restore_train_state(at_kill / "checkpoints" / "latest", restored)
    assert_trees_bitwise_equal(restored, saved)
    # ... and its counters carry on from it.
    per_epoch = rows[1]["updates"]
    assert [r["updates"] for r in rows] == [e * per_epoch for e in range(7)]
    saved_epoch = int(saved.step) // per_epoch
    assert int(saved.step) == saved_epoch * per_epoch and 2 <= saved_epoch < 6
    # env_steps too, where an uninterrupted run's sit: the replay buffer's refill is not counted again.
    prefill, per_epoch_steps = rows[0]["env_steps"], rows[1]["env_steps"] - rows[0]["env_steps"]
    assert [r["env_steps"] for r in rows] == [prefill + e * per_epoch_steps for e in range(7)]
    # wall_time goes on from the last row kept; the rate after the resume counts this session only.
    walls = [r["wall_time"] for r in rows[1:]]
    assert walls == sorted(walls) and len(set(walls)) == 6, walls
    last, first = rows[saved_epoch], rows[saved_epoch + 1]
    session_rate = (first["env_steps"] - last["env_steps"]) / (first["wall_time"] - last["wall_time"])
    assert first["env_steps_per_s"] == pytest.approx(session_rate, rel=1e-6)
    assert json.loads((run_dir / "complete.json").read_text())["epoch"] == 6


def test_list_topologies_and_the_help_name_every_choice():
    """``--list_topologies`` says what each topology runs; ``--help`` names every topology and env."""
    res = run_cli("--list_topologies")
    assert res.returncode == 0, res.stderr[-2000:]
    assert [line.split()[0] for line in res.stdout.splitlines()] == list(TOPOLOGIES)
    assert "decoupling" in res.stdout and "--from_run" in res.stdout
    help_text = " ".join(run_cli("--helpshort").stdout.split())  # absl wraps the help lines
    assert all(name in help_text for name in (*TOPOLOGIES, *envs.env_names())), help_text[:3000]
    assert "configs/presets.py:paper, :cpu or :default" in help_text
