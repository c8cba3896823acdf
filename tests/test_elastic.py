"""Elastic learners (issue 19): attach learners to a live distributed run and detach them, for real.

One real run (on the session's loopback Ray cluster, real replay server, real processes) is driven through the same
commands a user types: ``launch/run.py --attach RUN`` / ``--detach RUN --role NAME``.
"""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import run_cli
from test_faults import TINY, _end_with_ctrl_c, _roles, _rows, _start, _wait_for


def _cli(*args: str):
    res = run_cli(*args, timeout=900)
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    return res.returncode, res.stdout.strip(), (lines[-1] if lines else "")


def _refused(needle: str, *args: str) -> None:
    """The command exits 2 with one ``error:`` line that says ``needle``."""
    rc, _, err = _cli(*args)
    assert rc == 2 and err.startswith("error:") and needle in err, (rc, err)


def _refusals_of_a_live_run(R: str) -> None:
    """One line each, exit 2; nothing is changed by them. The five commands run at once (each a
    process a user could start; none changes the run), so they cost one command's wall time."""
    cases = [
        ("drives the collector and cannot be detached", "--detach", R, "--role", "collector_learner"),
        ("no live learner named 'nope'", "--detach", R, "--role", "nope"),
        ("multiple of 4", "--attach", R, "--learner_depths", "6"),
        ("already belongs to this run", "--attach", R, "--learner_depths", "4", "--role", "learner1_d4"),
        ("warm attach needs a run started with", "--attach", R, "--learner_depths", "4",
         "--set", "attach_warm_start=true"),
    ]  # fmt: skip
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda case: _cli(*case[1:]), cases))
    for (needle, *_), (rc, _, err) in zip(cases, results, strict=True):
        assert rc == 2 and err.startswith("error:") and needle in err, (needle, rc, err)


def test_attach_and_detach_learners_on_a_live_run_then_resume_it(tmp_path, replay, shared_ray):
    run_dir, R = tmp_path / "run", str(tmp_path / "run")
    args = ["--topology", "collector_deep_learner_shallow", *TINY, "--total_env_steps", "50000000",
            "--num_evals", "400", "--set", "spare_tables=1", "--replay", replay, *shared_ray]  # fmt: skip
    proc = _start(run_dir, *args)
    try:
        _wait_for(lambda: len(_rows(run_dir / "learner1_d4" / "metrics.jsonl")) >= 2, 300, "training", proc)
        _refusals_of_a_live_run(R)

        rc, out, err = _cli("--attach", R, "--learner_depths", "8", "--role", "extra")
        assert rc == 0, err
        assert out.startswith("attached extra: trains from table spare1, its data from env step"), out
        joined = int(out.rsplit(" ", 1)[1].replace(",", ""))
        roles = _roles(run_dir)
        assert roles["extra"]["status"] == "running" and roles["extra"]["table"] == "spare1", roles["extra"]
        assert roles["extra"]["joined_at"] == joined
        _refused("0 spare table(s) free", "--attach", R, "--learner_depths", "4")  # the only spare is taken
        _wait_for(lambda: [r["updates"] for r in _rows(run_dir / "extra" / "metrics.jsonl")][-1:] > [0], 300,
                  "the attached learner updates", proc)  # fmt: skip

        rc, out, err = _cli("--detach", R, "--role", "extra")
        assert rc == 0 and out.startswith("detached extra after"), (out, err)
        assert _roles(run_dir)["extra"]["status"] == "detached"
        record = json.loads((run_dir / "learners.json").read_text())
        assert [r["name"] for r in record["detached"]] == ["extra"] and record["attached"] == []
        extra = _rows(run_dir / "extra" / "metrics.jsonl")
        config = json.loads((run_dir / "config.json").read_text())
        per_collection = config["num_envs"] * config["unroll_length"]
        prefill = config["min_replay_steps_per_env"] // config["unroll_length"] * per_collection
        # Its curve starts where it joined the collector's stream (after its own prefill), and its
        # view of the collector's count never lies before that point.
        assert extra[0]["env_steps"] == joined + prefill and extra[0]["updates"] == 0, extra[0]
        assert all(r["collector_env_steps"] >= joined for r in extra), [r["collector_env_steps"] for r in extra]
        assert (run_dir / "extra" / "checkpoints" / "final").is_dir()

        # The freed table takes the next learner (a default name).
        rc, out, err = _cli("--attach", R, "--learner_depths", "4")
        assert rc == 0 and out.startswith("attached learner3_d4: trains from table spare1"), (out, err)
        joined2 = int(out.rsplit(" ", 1)[1].replace(",", ""))
        _wait_for(lambda: len(_rows(run_dir / "learner3_d4" / "metrics.jsonl")) >= 2, 300, "learner3 rows", proc)
        # An attached learner is a role like the others: killed, it is restarted on its own table.
        os.kill(_roles(run_dir)["learner3_d4"]["pid"], signal.SIGKILL)
        _wait_for(lambda: _roles(run_dir)["learner3_d4"]["restarts"] == 1
                  and _roles(run_dir)["learner3_d4"]["status"] == "running", 300, "learner3 restarted", proc)  # fmt: skip
        summary = _end_with_ctrl_c(proc, run_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
    _refused("no live run in", "--attach", R, "--learner_depths", "4")

    learners = {r["learner"]: r for r in summary["learners"]}
    assert set(learners) == {"collector_learner", "learner1_d4", "extra", "learner3_d4"}
    assert learners["extra"]["joined_at_env_steps"] == joined and learners["learner3_d4"]["joined_at_env_steps"] == joined2
    assert learners["collector_learner"]["joined_at_env_steps"] == 0
    assert summary["roles"]["learner3_d4"]["restarts"] == 1 and summary["roles"]["learner3_d4"]["table"] == "spare1"
    steps = [r["env_steps"] for r in _rows(run_dir / "learner3_d4" / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[0] > joined2, steps  # resumed from its checkpoint, no repeats
    _check_tables(summary, config["num_envs"], joined2)
    assert "| extra | 8 |" in (run_dir / "summary.md").read_text()

    # --resume brings the attached learner back, from its checkpoint; the detached one stays detached.
    before = _rows(run_dir / "learner3_d4" / "metrics.jsonl")
    total = summary["collector"]["env_steps"] + 4_000
    res = run_cli("--resume", "--run_dir", R, "--total_env_steps", str(total), timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    after = json.loads((run_dir / "summary.json").read_text())
    learners = {r["learner"]: r for r in after["learners"]}
    assert set(learners) == {"collector_learner", "learner1_d4", "extra", "learner3_d4"}
    assert learners["learner3_d4"]["updates"] > before[-1]["updates"]
    assert learners["extra"] == {**summary_row(summary, "extra")}
    assert _roles(run_dir)["learner3_d4"]["resumed_from"] > 0
    assert Path(run_dir / "extra").is_dir()


def _check_tables(summary: dict, num_envs: int, joined: int) -> None:
    """Switching the collector's tables lost and doubled nothing: the topology's tables got every
    segment, and the spare exactly those written since its last learner joined (it was emptied when
    the one before left)."""
    tables, collector = summary["replay_tables"], summary["collector"]
    for name in ("collector_learner", "learner1_d4"):
        assert tables[name]["num_inserts"] == collector["segments_written"], (name, tables[name], collector)
    L = collector["steps_written"] // collector["segments_written"]  # the segment length
    # (a segment spans collection steps: the first one after the switch may begin before it)
    fed = tables["spare1"]["num_inserts"] * L
    assert abs(fed - (collector["steps_written"] - joined)) <= num_envs * L, (fed, joined, collector)


def summary_row(summary: dict, name: str) -> dict:
    return next(r for r in summary["learners"] if r["learner"] == name)


def test_attach_refuses_what_is_not_a_live_distributed_run(tmp_path):
    _refused("holds no run", "--attach", str(tmp_path / "nothing"), "--learner_depths", "4")
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text(json.dumps({"topology": "single"}))
    _refused("learners join distributed runs only", "--attach", str(single), "--learner_depths", "4")
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "config.json").write_text(json.dumps({"topology": "decoupling"}))
    (stopped / "roles.json").write_text(json.dumps({"driver_pid": 1, "updated": 0, "roles": {}}))
    _refused("no live run in", "--detach", str(stopped), "--role", "learner1_d32")
    _refused("give --attach RUN or --detach RUN, not both", "--attach", str(stopped), "--detach", str(stopped))
    assert sorted(p.name for p in stopped.iterdir()) == ["config.json", "roles.json"]  # nothing written


@pytest.mark.ray_lane
def test_a_warm_attach_then_learners_from_the_runs_replay_checkpoint(tmp_path, replay, shared_ray):
    """With attach_warm_start the spare is fed (and drained) from the start, so an attached learner
    trains at once on what it holds. Then new learners of other depths train on the fixed data the
    run's replay checkpoint holds; that run is left as it was."""
    source, R = tmp_path / "source", str(tmp_path / "source")
    proc = _start(source, "--topology", "actor_learner", *TINY, "--total_env_steps", "50000000", "--num_evals",
                  "400", "--set", "spare_tables=1", "--set", "attach_warm_start=true", "--replay", replay, *shared_ray)  # fmt: skip
    try:
        _wait_for(lambda: len(_rows(source / "collector_learner" / "metrics.jsonl")) >= 2, 300, "training", proc)
        rc, out, err = _cli("--attach", R, "--learner_depths", "4", "--set", "attach_warm_start=true")
        assert rc == 0 and out.startswith("attached learner1_d4: trains from table spare1"), (out, err)
        joined = int(out.rsplit(" ", 1)[1].replace(",", ""))
        _wait_for(lambda: len(_rows(source / "learner1_d4" / "metrics.jsonl")) >= 2, 300, "its rows", proc)
        summary = _end_with_ctrl_c(proc, source)
    finally:
        if proc.poll() is None:
            proc.kill()
    spare, collector = summary["replay_tables"]["spare1"], summary["collector"]
    assert spare["num_inserts"] == collector["segments_written"]  # fed from the start ...
    assert spare["drained_while_down"] > 0  # ... and drained until the learner took it
    assert _rows(source / "learner1_d4" / "metrics.jsonl")[0]["env_steps"] == joined  # no prefill: data was there
    before = sorted(p.name for p in (source / "replay").iterdir())
    written = collector["steps_written"]

    run_dir = tmp_path / "again"
    res = run_cli("--topology", "learners_from_replay", "--from_run", str(source), "--learner_depths", "4,8",
                  "--total_env_steps", "12000", "--run_dir", str(run_dir), timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    table = summary["replay_tables"]["collector_learner"]  # the source's driving table: every learner's
    seg = written // collector["segments_written"]
    assert summary["data"]["env_steps_held"] == table["size"] * seg and 0 < table["size"] * seg <= written
    assert summary["data"]["env_steps_written"] == written
    assert f"data: {table['size'] * seg:,} env steps held by the replay checkpoint of {source}" in res.stdout
    assert summary["collector"] is None and not (run_dir / "collector").exists()
    total = json.loads((run_dir / "config.json").read_text())["total_env_steps"]
    for name in ("learner1_d4", "learner2_d8"):
        rows = _rows(run_dir / name / "metrics.jsonl")
        assert rows[0]["updates"] == 0 and rows[-1]["updates"] > 0 and rows[-1]["env_steps"] >= total, rows[-1]
    assert "trained on" in res.stdout.strip().splitlines()[-1]
    assert sorted(p.name for p in (source / "replay").iterdir()) == before  # the source is untouched

    _refused(f"left no {replay.capitalize()} checkpoint", "--topology", "learners_from_replay", "--learner_depths", "4",
             "--from_run", str(run_dir / "learner1_d4"), "--dry_run")  # fmt: skip
    _refused("--from_run goes with --topology learners_from_replay", "--topology", "decoupling",
             "--from_run", R, "--dry_run")  # fmt: skip
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "config.json").write_text(json.dumps({"topology": "single"}))
    _refused("is a single run", "--topology", "learners_from_replay", "--learner_depths", "4",
             "--from_run", str(tmp_path / "single"), "--dry_run")  # fmt: skip
