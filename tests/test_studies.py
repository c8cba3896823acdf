"""``launch/study.py`` as a user runs it: tiny studies end to end, interruption and resume, bad input.

The two real studies run once per module (fixture ``studies``): the decoupling
study in the background while the depth sweep runs, is killed after its first
run, and is re-run to completion.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
from conftest import is_number
from ml_collections import ConfigDict
from PIL import Image

from deepcrl.configs.experiment import resolve
from deepcrl.configs.paper import envs as paper_envs
from deepcrl.configs.studies import base_config, get_study
from deepcrl.learner.agent import make_agent
from deepcrl.learner.networks import count_params

ROOT = Path(__file__).resolve().parents[1]
STUDY = [sys.executable, str(ROOT / "launch" / "study.py")]
TINY = [
    "--scale", "cpu", "--envs", "point_mass", "--seeds", "1",
    "--set", "total_env_steps=8000", "--set", "num_envs=8", "--set", "num_eval_envs=8", "--set", "batch_size=64",
    "--set", "critic_width=16", "--set", "actor_width=16", "--set", "num_minibatches=2", "--set", "num_evals=2",
]  # fmt: skip
ONE_PANEL_PX = (750, 600)  # rundir/plots.py: a 5.0 x 4.0 in panel at 150 dpi
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _state(study_dir: Path) -> dict:
    try:
        return json.loads((study_dir / "study.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the study and whatever Ray left in its session (a machine that died)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    cache = ["--compilation_cache", str(root / "jax_cache")]
    sweep_dir, dec_dir = root / "depth_sweep", root / "decoupling"
    sweep_cmd = [*STUDY, "--study", "depth_sweep", "--depths", "4,8", "--max_concurrent", "1", *TINY, *cache,
                 "--study_dir", str(sweep_dir)]  # fmt: skip
    dec_log = (root / "decoupling.log").open("w")
    dec = subprocess.Popen(
        [*STUDY, "--study", "decoupling", "--depths", "8,4", "--max_concurrent", "2", *TINY, *cache, "--study_dir", str(dec_dir)],
        stdout=dec_log, stderr=subprocess.STDOUT, cwd=ROOT, env=ENV, start_new_session=True,
    )  # fmt: skip
    try:
        # Session 1: kill the depth sweep once its first run is done and its second has started.
        first = subprocess.Popen(
            sweep_cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=ENV,
            start_new_session=True,
        )
        deadline = time.time() + 400
        try:
            while time.time() < deadline and first.poll() is None:
                runs = _state(sweep_dir).get("runs", {})
                states = sorted(r["state"] for r in runs.values())
                if states == ["done", "running"]:
                    break
                time.sleep(0.5)
            assert first.poll() is None, "the study ended before it could be interrupted"
            assert time.time() < deadline, "no run finished in time"
        finally:
            _kill_group(first)
        interrupted = _state(sweep_dir)
        done = next(n for n, r in interrupted["runs"].items() if r["state"] == "done")
        done_mtime = (sweep_dir / "runs" / done / "complete.json").stat().st_mtime
        # Session 2: the same command finishes the study.
        second = subprocess.run(sweep_cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=500)
        dec.wait(timeout=600)
    finally:
        if dec.poll() is None:
            _kill_group(dec)
        dec_log.close()
    return {
        "sweep_dir": sweep_dir,
        "sweep_cmd": sweep_cmd,
        "interrupted": interrupted,
        "done_first": done,
        "done_mtime": done_mtime,
        "second": second,
        "dec_dir": dec_dir,
        "dec_rc": dec.returncode,
        "dec_log": (root / "decoupling.log").read_text(),
    }


def _table_rows(report: str, first_cell: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in report.splitlines()
        if line.startswith(f"| {first_cell} |")
    ]


def test_depth_sweep_report_has_every_cell(studies):
    assert studies["second"].returncode == 0, studies["second"].stderr[-3000:]
    study_dir = studies["sweep_dir"]
    state = _state(study_dir)
    assert {n: r["state"] for n, r in state["runs"].items()} == {
        "point_mass-d4-s0": "done",
        "point_mass-d8-s0": "done",
    }
    report = (study_dir / "report.md").read_text()
    assert "interquartile mean (IQM)" in report and "bootstrap" in report and "cores" in report
    assert "total wall time" in report and "session(s) of the study command" in report
    rows = _table_rows(report, "point_mass")
    results = [r for r in rows if len(r) == 8]  # env, depth, seeds, 5 metrics (time at goal first)
    assert sorted(r[1] for r in results) == ["4", "8"]
    for r in results:
        assert r[2] == "1" and all(is_number(c) for c in r[3:]), r
        # One seed: each cell is that run's own final evaluation, as its complete.json says.
        final = json.loads((study_dir / "runs" / f"point_mass-d{r[1]}-s0" / "complete.json").read_text())
        expected = [final["eval/time_at_goal"], final["eval/time_at_goal_frac"], final["eval/success"]]
        assert [float(c) for c in r[3:6]] == pytest.approx(expected, abs=0.051), (r, final)
        assert int(r[6].replace(",", "")) == final["env_steps"], (r, final)
    coverage = [r for r in rows if len(r) == 5]  # env, depth, seeds, cells visited, goal spread
    assert sorted(r[1] for r in coverage) == ["4", "8"] and all(
        is_number(c) for r in coverage for c in r[3:]
    )
    curves = (study_dir / "curves.csv").read_text().splitlines()
    assert curves[0].startswith("run,seed,env,depth,env_steps")
    assert {line.split(",")[0] for line in curves[1:]} == {"point_mass-d4-s0", "point_mass-d8-s0"}
    assert len(curves) == 1 + 2 * 3  # two runs, three evaluations each (untrained + 2)


def test_interrupted_study_resumes_without_redoing_finished_runs(studies):
    study_dir, done = studies["sweep_dir"], studies["done_first"]
    assert "1 already done" in studies["second"].stdout
    state = _state(study_dir)
    other = next(n for n in state["runs"] if n != done)
    # The finished run was not touched again; the interrupted one ran a second attempt to the end.
    assert state["runs"][done]["attempts"] == 1
    assert (study_dir / "runs" / done / "complete.json").stat().st_mtime == studies["done_mtime"]
    assert (study_dir / "runs" / done / "study_task.log").read_text().count("attempt on") == 1
    assert studies["interrupted"]["runs"][other]["state"] == "running"
    assert state["runs"][other]["attempts"] == 2 and state["runs"][other]["state"] == "done"
    epochs = [json.loads(line)["epoch"] for line in (study_dir / "runs" / other / "metrics.jsonl").open()]
    assert epochs == [0, 1, 2]  # resumed or restarted, never duplicated
    # A third invocation has nothing left to do.
    third = subprocess.run(
        studies["sweep_cmd"], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300
    )
    assert third.returncode == 0 and "2 already done" in third.stdout, third.stderr[-2000:]
    assert _state(study_dir)["runs"][other]["attempts"] == 2


def test_decoupling_report_has_the_full_grid(studies):
    assert studies["dec_rc"] == 0, studies["dec_log"][-3000:]
    study_dir = studies["dec_dir"]
    for collector in (8, 4):
        summary = json.loads(
            (study_dir / "runs" / f"point_mass-collector_d{collector}-s0" / "summary.json").read_text()
        )
        assert [r["learner"] for r in summary["learners"]] == [
            "collector_learner",
            "learner1_d8",
            "learner2_d4",
        ]
    report = (study_dir / "report.md").read_text()
    results = [r for r in _table_rows(report, "point_mass") if len(r) == 10]
    cells = {(r[1], r[2], r[3]) for r in results}
    assert cells == {
        ("8", "collector agent", "8"), ("8", "train-only", "8"), ("8", "train-only", "4"),
        ("4", "collector agent", "4"), ("4", "train-only", "8"), ("4", "train-only", "4"),
    }  # fmt: skip
    assert all(is_number(c) for r in results for c in r[5:])
    for r in results:  # one seed: each cell is the learner's own final row, as its run's summary says
        summary = json.loads((study_dir / "runs" / f"point_mass-collector_d{r[1]}-s0" / "summary.json").read_text())
        name = "collector_learner" if r[2] == "collector agent" else f"learner{1 if r[3] == '8' else 2}_d{r[3]}"
        learner = next(x for x in summary["learners"] if x["learner"] == name)
        expected = [learner["eval/time_at_goal"], learner["eval/time_at_goal_frac"], learner["eval/success"]]
        assert [float(c) for c in r[5:8]] == pytest.approx(expected, abs=0.051), (r, learner)
        assert int(r[8].replace(",", "")) == learner["env_steps"], (r, learner)
    grid_rows = _table_rows(report, "collector d8") + _table_rows(report, "collector d4")
    assert len(grid_rows) == 4  # two tables (time at goal, success), a row per collector
    assert {r[0] for r in grid_rows} == {"collector d8", "collector d4"}
    assert all(len(r) == 3 and all(is_number(c) for c in r[1:]) for r in grid_rows)
    assert "final time at goal (steps) of the train-only learners" in report
    assert "| | learner d8 | learner d4 |" in report.replace("|  |", "| |")
    coverage = [r for r in _table_rows(report, "point_mass") if len(r) == 5]
    assert sorted(r[1] for r in coverage) == ["4", "8"]


@pytest.mark.parametrize(
    "which, names",
    [
        ("sweep_dir", ["time_at_goal_curves.png", "success_curves.png", "final_time_at_goal.png",
                       "final_success.png", "coverage.png"]),
        ("dec_dir", ["time_at_goal_curves.png", "success_curves.png", "decoupling_grid_time_at_goal.png",
                     "decoupling_grid.png", "coverage.png"]),
    ],
)
def test_plots_are_pngs_of_the_expected_size(studies, which, names):
    for name in names:
        with Image.open(studies[which] / name) as im:
            assert im.format == "PNG" and im.size == ONE_PANEL_PX, name
            im.verify()
        with Image.open(studies[which] / name) as im:
            colours = _drawn_colours(im)
        # Something is drawn in colour (axes, ticks and text are grey); curve plots show both depths.
        assert len(colours) >= (2 if "curves" in name else 1), (name, colours)


def _drawn_colours(im: Image.Image, min_pixels: int = 40) -> dict[tuple, int]:
    """Saturated colours (quantised) covering at least ``min_pixels``: a plot's series, not its frame."""
    import numpy as np

    px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    saturated = px[(px.max(axis=1) - px.min(axis=1)) > 60] // 32
    keys, counts = np.unique(saturated, axis=0, return_counts=True)
    return {tuple(k): int(c) for k, c in zip(keys, counts, strict=True) if c >= min_pixels}


def _study(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*STUDY, *args], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=timeout)


def test_a_different_definition_in_the_same_dir_is_refused(studies):
    res = _study(
        "--study", "depth_sweep", "--depths", "4,16", *TINY, "--study_dir", str(studies["sweep_dir"])
    )
    assert res.returncode == 2
    assert (
        res.stderr.strip().splitlines()[-1].startswith("error: ")
        and "different study definition" in res.stderr
    )
    assert "options" in res.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--study", "depth_swoop"], "unknown study 'depth_swoop'; valid studies: depth_sweep, decoupling"),
        (
            ["--study", "depth_sweep", "--scale", "cpu", "--set", "critic_depth=8"],
            "--set critic_depth conflicts",
        ),
        (["--study", "depth_sweep", "--scale", "cpu", "--set", "seed=3"], "(use --seeds)"),
        (
            ["--study", "depth_sweep", "--scale", "cpu", "--depths", "4,6"],
            "multiples of 4 between 4 and 1024",
        ),
        (
            ["--study", "depth_sweep", "--scale", "cpu", "--depths", "2048"],
            "multiples of 4 between 4 and 1024",
        ),
        (["--study", "depth_sweep", "--scale", "cpu", "--seeds", "0"], "--seeds count must be positive"),
        (["--study", "decoupling", "--scale", "cpu", "--depths", "4,4"], "two different depths"),
        (["--study", "depth_sweep", "--scale", "cpu", "--batch_sizes", "256"], "only to --study batch_sweep"),
        (["--study", "depth_sweep", "--scale", "paper", "--envs", "point_mass"], "valid: ant"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, args, needle):
    res = _study(*args, "--study_dir", str(tmp_path / "s"))
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and needle in last, last
    assert "Traceback" not in res.stderr


def test_study_definitions():
    sweep = get_study("depth_sweep").get_runs(["a", "b"], [0, 1], "cpu", {"depths": [4, 8, 1024]})
    assert len(sweep) == 12 and len({r.name for r in sweep}) == 12
    assert all(
        r.overrides["critic_depth"] == r.overrides["actor_depth"] == r.condition["depth"] for r in sweep
    )
    batch = get_study("batch_sweep").get_runs(
        ["a"], [0], "paper", get_study("batch_sweep").DEFAULT_OPTIONS["paper"]
    )
    assert sorted({(r.condition["depth"], r.condition["batch_size"]) for r in batch}) == [
        (d, b) for d in (4, 64) for b in (256, 512, 1024, 2048, 4096)
    ]
    dec = get_study("decoupling").get_runs(["a", "b", "c"], [0], "paper", {"depths": [32, 4]})
    assert {(r.overrides["collector_depth"], r.overrides["learner_depths"]) for r in dec} == {
        (32, "32,4"),
        (4, "32,4"),
    }
    assert all(r.overrides["topology"] == "decoupling" for r in dec) and len(dec) == 6


def test_width_vs_depth_budgets_match():
    study = get_study("width_vs_depth")
    runs = study.get_runs(
        ["point_mass_walls"], [0], "cpu", {"depths": [4, 8, 16]}, lambda e: base_config("cpu", e)
    )
    by = {
        (r.condition["scaled"], r.condition["depth"], r.condition["width"]): r.condition["params"]
        for r in runs
    }
    deeper = {d: p for (s, d, _), p in by.items() if s == "depth"}
    wider = {w: p for (s, _, w), p in by.items() if s == "width"}
    assert sorted(deeper) == [8, 16] and len(wider) == 2
    for (d, p_deep), (w, p_wide) in zip(sorted(deeper.items()), sorted(wider.items()), strict=True):
        assert abs(p_wide - p_deep) <= 0.03 * p_deep, (d, w)
        assert w > 32  # width was spent, at the base depth
    config = base_config("cpu", "point_mass_walls")
    for (_, d, w), p in by.items():  # the fitted counts are those of a real, initialised agent
        c = ConfigDict(config.to_dict())
        c.critic_depth = c.actor_depth = d
        c.critic_width = c.actor_width = w
        state = make_agent(resolve(c).agent).init(jax.random.PRNGKey(0))
        assert count_params((state.actor, state.critic)) == p, (d, w)


def test_paper_env_configs():
    for name in paper_envs.PAPER_ENVS:
        c = paper_envs.get_config(name)
        assert c.env == name and c.episode_length == 1000 and c.num_envs == 512 and c.critic_width == 256
        assert c.total_env_steps == 100_000_000 and c.batch_size == 512 and c.num_evals == 100
    assert set(paper_envs.HEADLINE_ENVS) <= set(paper_envs.PAPER_ENVS) and len(paper_envs.HEADLINE_ENVS) == 10
    with pytest.raises(ValueError, match="valid: ant, ant_u4_maze"):
        paper_envs.get_config("moon_lander")


def test_paper_env_config_through_run_py():
    """The documented command's config resolves (validated, not run: it is 100M humanoid steps)."""
    code = (
        "import sys; sys.argv=['run.py','--config','configs/paper/envs.py:humanoid_u_maze','--critic_depth','64'];"
        "from absl import flags; import deepcrl.launch.run as r; flags.FLAGS(sys.argv);"
        "c=r.build_config(); from deepcrl.configs.experiment import resolve; lay=resolve(c).layout;"
        "print(c.env, c.critic_depth, c.total_env_steps, c.episode_length, lay.episode_length)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-5:] == ["humanoid_u_maze", "64", "100000000", "1000", "1000"]
    bad = subprocess.run(
        [sys.executable, "launch/run.py", "--config", "configs/paper/envs.py:moon"],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120,
    )  # fmt: skip
    assert (
        bad.returncode == 2 and "unknown paper env 'moon'; valid: ant" in bad.stderr.strip().splitlines()[-1]
    )


def test_compare_reads_both_studies_by_critic_depth(studies, tmp_path):
    """launch/compare.py on two study directories: every learner of every run, grouped by its own
    critic depth: the sweep's run of that depth, the decoupling runs' collector agent of that depth, and
    their train-only learner of that depth in both runs (4 of each depth)."""
    assert studies["second"].returncode == 0 and studies["dec_rc"] == 0
    res = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "compare.py"), str(studies["sweep_dir"]), str(studies["dec_dir"]),
         "--by", "critic_depth", "--out", str(tmp_path / "c.png")],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _table_rows(res.stdout, "point_mass")
    assert {r[1]: r[2] for r in rows} == {"4": "4", "8": "4"}, res.stdout
    assert all(is_number(r[4].split(" [")[0]) and r[4].endswith("]") for r in rows), rows  # IQM [95 % CI]
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (ONE_PANEL_PX[0], 2 * ONE_PANEL_PX[1])
