"""The Python API (docs/api.md) as a user runs it: the page's example runs as written, in a fresh
process; then what it does not show: bad input, and ``launch/evaluate.py``."""

from __future__ import annotations

import json
import platform
import re
import socket
import subprocess
import sys

import jax
import pytest
from conftest import ROOT

import deepcrl

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)


def _example() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """The page's example in a fresh process (its own cwd); it asserts the exported policy's numbers
    equal the run's after the run directory is deleted. A second process evaluates a run it trains."""
    cwd = tmp_path_factory.mktemp("api")
    res = subprocess.run([sys.executable, "-c", _example()], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return cwd, res.stdout


def test_the_api_page_example_runs_and_the_exported_policy_gives_the_same_numbers(example_run):
    cwd, out = example_run
    lines = out.strip().splitlines()
    assert lines[0] == "Run('runs/api-example', learner='single')"
    successes = json.loads(lines[1].replace("'", '"'))
    assert len(successes) == 3 and all(0 <= s <= 1 for s in successes)  # the untrained policy + 2 epochs
    assert not (cwd / "runs" / "api-example").exists() and (cwd / "policy.deepcrl").is_file()
    assert lines[-1].startswith("point_mass ") and lines[-1].endswith("checkpoints/final")


def test_import_deepcrl_loads_no_launcher_and_names_its_api():
    code = "import sys, deepcrl; print(sorted(deepcrl.__all__)); print('deepcrl.launch.api' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == [
        "['ExportedPolicy', 'Run', 'evaluate_policy', 'load', 'load_policy', 'train']", "False"]  # fmt: skip


def test_bad_input_is_one_line(tmp_path, example_run):
    with pytest.raises(ValueError, match="unknown config field 'gama'"):
        deepcrl.train(gama=0.9, run_dir=tmp_path / "r")
    with pytest.raises(ValueError, match="critic depth must be a positive multiple of 4"):
        deepcrl.train(critic_depth=6, run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    with pytest.raises(Exception, match="holds no run"):
        deepcrl.load(tmp_path)
    with pytest.raises(ValueError, match="is not an exported deepcrl policy"):
        deepcrl.load_policy(ROOT / "README.md")
    assert deepcrl.load_policy(example_run[0] / "policy.deepcrl").meta["learner"] == "single"


def test_evaluate_py_prints_writes_and_exports(tmp_path):
    run = deepcrl.train(env="point_mass", total_env_steps=6000, num_envs=8, num_eval_envs=8, batch_size=32,
                        critic_width=16, actor_width=16, num_evals=1, run_dir=tmp_path / "run")  # fmt: skip
    # Provenance (issue 27, item 3): the code and the stack this session ran, true ones.
    prov = json.loads((run.run_dir / "provenance.json").read_text())
    assert len(prov) == 1 and prov[0]["packages"]["jax"] == jax.__version__ and prov[0]["python"] == platform.python_version()
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    assert prov[0]["git_commit"] == git("rev-parse", "HEAD")
    assert prov[0]["git_dirty"] == bool(git("status", "--porcelain", "--untracked-files=no"))
    assert prov[0]["jax_devices"] == [str(jax.local_devices()[0])] and prov[0]["host"] == socket.gethostname()
    res = subprocess.run([sys.executable, str(ROOT / "launch" / "evaluate.py"), "--run_dir", str(run.run_dir),
                          "--episodes", "16", "--export", str(tmp_path / "p.deepcrl")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"single of {run.run_dir}, checkpoint {run.run_dir}/checkpoints/final, on point_mass:" in res.stdout
    written = json.loads(next((run.run_dir / "evaluations").glob("*-single-point_mass.json")).read_text())
    assert written["episodes"] == 16 and written == {**written, **run.evaluate(num_episodes=16)}
    assert deepcrl.load_policy(tmp_path / "p.deepcrl").evaluate(16) == run.evaluate(num_episodes=16)
    for args, needle in [(["--run_dir", str(tmp_path / "nope")], "nope does not exist"),
                         (["--run_dir", str(tmp_path)], "holds no run (no config.json)"),
                         (["--run_dir", str(run.run_dir), "--learner", "x"], "has no learner 'x'; its learners: single"),
                         (["--run_dir", str(run.run_dir), "--env", "antt"], "unknown env 'antt'; valid:")]:  # fmt: skip
        res = subprocess.run([sys.executable, str(ROOT / "launch" / "evaluate.py"), *args], capture_output=True, text=True)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.returncode == 2 and len(errors) == 1 and needle in errors[0], res.stderr[-1500:]
