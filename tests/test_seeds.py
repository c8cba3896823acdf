"""``--num_seeds K``: K seeds of ``single`` vmapped in one program, as a user runs it.

One K=3 run is killed (kill -9) after its first trained epoch and resumed; its
files then serve every check. Separate one-seed runs with ``seed + s`` are the
references for its seeds s = 0, 1, 2. A copy of the run directory as the kill
left it lies next to it (``at_kill/``), with the train state the resumed run
trained from (``restored.pkl``, see tests/restore_spy.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
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
from restore_spy import (
    assert_trees_bitwise_equal,
    complete_lines,
    load_recorded,
    run_cli_recording_restore,
)

from deepcrl.configs.experiment import resolve
from deepcrl.learner.agent import make_agent
from deepcrl.rundir.checkpoints import restore_train_state
from deepcrl.rundir.layout import learners

ARGS = [
    "--total_env_steps", "44000", "--num_envs", "8", "--num_eval_envs", "4", "--batch_size", "32",
    "--critic_width", "16", "--actor_width", "16", "--num_evals", "4", "--seed", "5",
    "--set", "num_minibatches=2", "--set", "unroll_length=25", "--set", "min_replay_steps_per_env=50",
    "--noprogress",
]  # fmt: skip
K = 3
COMPARED = ("eval/", "critic/", "actor/", "alpha/", "coverage/", "train/", "relabel/")


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def k_seeds(tmp_path_factory):
    """A K=3 run, killed after epoch 1 and resumed: its run directory."""
    run_dir = tmp_path_factory.mktemp("seeds") / "run"
    args = [*ARGS, "--num_seeds", str(K), "--run_dir", str(run_dir)]
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch" / "run.py"), *args], cwd=ROOT)
    mean = run_dir / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and not (mean.exists() and len(mean.read_text().splitlines()) >= 2):
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.wait()
    assert not (run_dir / "complete.json").exists(), "the run ended before it could be killed"
    shutil.copytree(run_dir, run_dir.parent / "at_kill")
    res = run_cli_recording_restore(*args, "--resume", path=run_dir.parent / "restored.pkl")
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


@pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)
def test_k_seeds_write_per_seed_rows_and_their_mean(k_seeds):
    mean = _rows(k_seeds / "metrics.jsonl")
    seeds = [_rows(k_seeds / f"seed_{s}" / "metrics.jsonl") for s in range(K)]
    for rows in [mean, *seeds]:
        assert [r["epoch"] for r in rows] == list(range(5))  # resumed: no epoch lost or duplicated
        updates = [r["updates"] for r in rows]
        assert updates[-1] == 4 * updates[1] > 0  # training continued, not restarted
    for m, *per_seed in zip(mean, *seeds, strict=True):
        assert m["num_seeds"] == K and {r["env_steps"] for r in per_seed} == {m["env_steps"]}
        keys = ["eval/final_distance", "coverage/goal_spread"] + (["critic/loss"] if m["epoch"] else [])
        for k in keys:  # epoch 0 (the untrained policy) has no training metrics
            assert k in m and all(k in r for r in per_seed), (m["epoch"], k)
            assert m[k] == pytest.approx(sum(r[k] for r in per_seed) / K, rel=1e-6)
    curves = {tuple(r["eval/final_distance"] for r in rows) for rows in seeds}
    assert len(curves) == K, "two seeds evaluated identically"
    for s in range(K):
        config = json.loads((k_seeds / f"seed_{s}" / "config.json").read_text())
        assert config["seed"] == 5 + s and config["num_seeds"] == 1
        assert json.loads((k_seeds / f"seed_{s}" / "complete.json").read_text())["epoch"] == 4
        assert (k_seeds / f"seed_{s}" / "metrics.csv").exists()
    assert json.loads((k_seeds / "complete.json").read_text())["num_seeds"] == K
    assert (k_seeds / "success.png").exists()
    # One layout (rundir/layout.py): the summary names each seed's agent and its folder.
    found = learners(k_seeds)
    assert [(f.name, f.folder, f.seed) for f in found] == [("single", k_seeds / f"seed_{s}", 5 + s) for s in range(K)]
    for f in found:
        complete = json.loads((f.folder / "complete.json").read_text())
        assert f.final["eval/success"] == complete["eval/success"] and f.final["updates"] == complete["updates"]


@pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)
def test_k_seeds_resume_continues_from_the_saved_state(k_seeds):
    """Not a silent restart: rows written before the kill stay byte for byte, the K stacked train states
    the resumed run trains from are bitwise the saved ones, and the counters carry on from them."""
    at_kill = k_seeds.parent / "at_kill"
    for folder in [Path("."), *(Path(f"seed_{s}") for s in range(K))]:
        before = complete_lines((at_kill / folder / "metrics.jsonl").read_text())
        assert before.count("\n") >= 2, folder  # epochs 0 and 1 at least (seed rows precede the mean's)
        assert (k_seeds / folder / "metrics.jsonl").read_text().startswith(before), folder
    restored = load_recorded(k_seeds.parent / "restored.pkl")
    saved = restore_train_state(at_kill / "checkpoints_all_seeds" / "latest", restored)
    assert_trees_bitwise_equal(restored, saved)
    steps = np.asarray(jax.device_get(saved.step))
    assert steps.shape == (K,) and len(set(steps.tolist())) == 1 and steps[0] > 0
    for s in range(K):
        rows = _rows(k_seeds / f"seed_{s}" / "metrics.jsonl")
        per_epoch = rows[1]["updates"]
        assert [r["updates"] for r in rows] == [e * per_epoch for e in range(5)]
        saved_epoch = steps[0] // per_epoch
        assert 1 <= saved_epoch < 4  # killed after epoch 1, before the end
        # Rows sit where an uninterrupted run's do: the replay buffer's refill is not counted again.
        prefill, per_epoch_steps = rows[0]["env_steps"], rows[1]["env_steps"] - rows[0]["env_steps"]
        assert [r["env_steps"] for r in rows] == [prefill + e * per_epoch_steps for e in range(5)]
    for folder in [k_seeds, *(k_seeds / f"seed_{s}" for s in range(K))]:  # every row, every field
        rows = assert_csv_equals_jsonl(folder)
        walls = [r["wall_time"] for r in rows[1:]]  # going on across the resume
        assert walls == sorted(walls) and len(set(walls)) == 4, (folder, walls)


@pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)
def test_seeds_train_different_agents_with_per_seed_checkpoints(k_seeds):
    config = ConfigDict(json.loads((k_seeds / "seed_0" / "config.json").read_text()))
    agent = make_agent(resolve(config).agent)
    target = agent.init(jax.random.PRNGKey(0))
    states = [restore_train_state(k_seeds / f"seed_{s}" / "checkpoints" / "final", target) for s in range(K)]
    assert len({int(st.step) for st in states}) == 1 and int(states[0].step) > 0
    actors = [np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(st.actor)]) for st in states]
    for i in range(K):
        for j in range(i + 1, K):
            assert not np.allclose(actors[i], actors[j]), f"seeds {i} and {j} trained the same actor"


@pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)
@pytest.mark.parametrize("s", range(K))
def test_each_seed_equals_a_separate_one_seed_run(k_seeds, tmp_path, s):
    """Same keys, same function: equal to float32 rounding after one epoch (not bitwise: batched kernels).

    Every continuous metric agrees to 2e-4 (up to 1.1e-4 apart seen on JAX 0.12). critic/accuracy counts argmax hits over logits that are
    still nearly uniform this early (≈ 0.1 against chance 0.03), so the rounding differences of
    batched kernels flip a few near-ties (1 to 11 of 3,520 seen on JAX 0.12): compared within 1 %.
    """
    res = run_cli(*ARGS, "--seed", str(5 + s), "--run_dir", str(tmp_path / "one"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (tmp_path / "one" / "seed_0").exists()  # one seed writes the plain layout
    assert (tmp_path / "one" / "checkpoints" / "final").is_dir()
    alone = _rows(tmp_path / "one" / "metrics.jsonl")
    inside = _rows(k_seeds / f"seed_{s}" / "metrics.jsonl")
    for a, b in zip(alone[:2], inside[:2], strict=True):  # epochs 0 and 1, before the kill
        assert a["epoch"] == b["epoch"] and a["env_steps"] == b["env_steps"]
        keys = [k for k in a if k.startswith(COMPARED)]
        assert len(keys) > 5
        tol = {k: 1e-2 if k.endswith("accuracy") else 1e-5 for k in keys}
        bad = [(k, a[k], b[k]) for k in keys if b[k] != pytest.approx(a[k], rel=2e-4, abs=tol[k])]
        assert not bad, bad


@pytest.mark.core
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--num_seeds", "0"], "num_seeds must be a positive integer, got 0"),
        (["--num_seeds", "2", "--topology", "actor_learner"], "num_seeds > 1 runs only with topology single"),
    ],
)
def test_bad_num_seeds_exits_2_with_one_line(tmp_path, args, needle):
    run_dir = tmp_path / "should_not_exist"
    res = run_cli(*args, "--run_dir", str(run_dir), timeout=120)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr and not run_dir.exists()


def test_study_trains_a_conditions_seeds_in_one_program(tmp_path):
    """depth_sweep with two seeds: one K=2 task; each seed's run directory and the report as before."""
    study_dir = tmp_path / "study"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "study.py"), "--study", "depth_sweep", "--depths", "4",
         "--scale", "cpu", "--envs", "point_mass", "--seeds", "2", "--study_dir", str(study_dir),
         "--set", "total_env_steps=8000", "--set", "num_envs=8", "--set", "num_eval_envs=8",
         "--set", "batch_size=64", "--set", "critic_width=16", "--set", "actor_width=16",
         "--set", "num_minibatches=2", "--set", "num_evals=2", "--compilation_cache", ""],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "1 more seeds in one program" in res.stdout
    runs = json.loads((study_dir / "study.json").read_text())["runs"]
    assert sorted(runs) == ["point_mass-d4-s0", "point_mass-d4-s1"]
    for name, record in runs.items():
        assert record["state"] == "done" and record["seeds_in_one_program"] == 2, record
        rows = _rows(study_dir / "runs" / name / "metrics.jsonl")
        assert [r["epoch"] for r in rows] == [0, 1, 2]
        assert record["final"]["eval/success"] == rows[-1]["eval/success"]
        seed = json.loads((study_dir / "runs" / name / "config.json").read_text())["seed"]
        assert seed == int(name[-1])
    assert (study_dir / "seed_groups" / "point_mass-d4-s0" / "metrics.jsonl").exists()
    curves = (study_dir / "curves.csv").read_text().splitlines()
    assert {line.split(",")[0] for line in curves[1:]} == {"point_mass-d4-s0", "point_mass-d4-s1"}
    assert len(curves) == 1 + 2 * 3
    wall = runs["point_mass-d4-s0"]["wall_time_s"] + runs["point_mass-d4-s1"]["wall_time_s"]
    report = (study_dir / "report.md").read_text()  # the program's wall time, not a per-seed mean ± 0
    assert f"{wall:,.0f} for 2 seeds in 1 program" in report, report
