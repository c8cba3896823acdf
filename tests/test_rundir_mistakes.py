"""Run directories survive mistakes, and damaged checkpoints cost one checkpoint, not the run (issue 16).

Bad input is one ``error:`` line, exit code 2, and nothing written or changed where it was
reported (a snapshot of the directory tree with mtimes and bytes is compared before and after).
Checkpoints are damaged for real: files truncated, deleted, overwritten with garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli
from ml_collections import ConfigDict

import deepcrl
from deepcrl.launch.cli import UsageError, check_writable_dir
from deepcrl.roles.collector import Collector
from deepcrl.roles.learner import Learner
from deepcrl.rundir.checkpoints import (
    MANIFEST,
    CheckpointError,
    previous,
    restore_train_state,
    save_train_state,
)

TINY = [
    "--total_env_steps", "5000", "--num_envs", "8", "--num_eval_envs", "4", "--batch_size", "32",
    "--num_evals", "3", "--critic_width", "16", "--actor_width", "16", "--set", "num_minibatches=2",
    "--noprogress",
]  # fmt: skip


def _tree(root: Path) -> dict:
    """Every path under ``root`` (itself included): type, mtime, size and a digest of the bytes."""
    root = Path(root)
    if not root.exists():
        return {}
    out = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        digest = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else None
        out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, st.st_size if digest else 0, digest)
    return out


def _digests(root: Path) -> dict:
    return {k: v[3] for k, v in _tree(root).items() if v[3]}


def _lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def _one_error(res, needle: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    errors = _lines(res.stderr, "error:")
    assert len(errors) == 1 and needle in errors[0], res.stderr[-3000:]
    assert "Traceback" not in res.stderr and not _lines(res.stderr, "warning:"), res.stderr[-3000:]
    return errors[0]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _data_files(ckpt: Path) -> list[Path]:
    """The array data of an Orbax checkpoint (its ``d/`` folders)."""
    files = sorted(f for f in ckpt.rglob("*") if f.is_file() and f.parent.name == "d")
    assert files, f"no data files in {ckpt}"
    return files


def _truncate(ckpt: Path) -> None:
    for f in _data_files(ckpt):
        os.truncate(f, f.stat().st_size // 2)


def _delete_some(ckpt: Path) -> None:
    for f in _data_files(ckpt)[::2]:
        f.unlink()


def _garbage(ckpt: Path) -> None:
    for f in _data_files(ckpt):
        f.write_bytes(b"\x5a" * f.stat().st_size)  # same size: only the CRC32 tells


def _cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / script), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished tiny single run (3 epochs), shared: tests that change it work on a copy."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    res = run_cli("--run_dir", str(run_dir), *TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run_dir / "checkpoints" / "latest.old").is_dir()  # the previous epoch's, kept beside it
    return run_dir


def _copy(run_dir: Path, tmp_path: Path, killed: bool = False) -> Path:
    """A copy of the run; ``killed``: as if killed after its last epoch's checkpoint (not finished)."""
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    if killed:
        (dst / "complete.json").unlink()
        shutil.rmtree(dst / "checkpoints" / "final")
    return dst


# ----------------------------------------------------------------------------- --resume of no run


def test_resume_without_run_dir_is_an_error():
    _one_error(run_cli("--resume", "--noprogress", timeout=120), "--resume needs --run_dir")


def test_resume_of_a_missing_or_empty_run_dir_writes_nothing(tmp_path):
    before = _tree(tmp_path)
    _one_error(run_cli("--resume", "--run_dir", str(tmp_path / "nope"), timeout=120), "does not exist")
    (tmp_path / "empty").mkdir()
    before = _tree(tmp_path)
    res = run_cli("--resume", "--run_dir", str(tmp_path / "empty"), timeout=120)
    _one_error(res, "holds no run (no config.json)")
    assert _tree(tmp_path) == before


def test_resume_without_config_json_does_not_append_rows_of_another_config(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path, killed=True)
    (run / "config.json").unlink()
    before = _tree(run)
    _one_error(run_cli("--resume", "--run_dir", str(run), timeout=120), "holds no run (no config.json)")
    assert _tree(run) == before


def test_resume_with_a_config_json_that_does_not_parse(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path, killed=True)
    (run / "config.json").write_text('{"env": "point_mass", ')
    before = _tree(run)
    line = _one_error(run_cli("--resume", "--run_dir", str(run), timeout=120), "does not parse")
    assert str(run / "config.json") in line
    assert _tree(run) == before


def test_resume_of_a_finished_run_says_so_and_changes_nothing(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    before = _tree(run)
    res = run_cli("--resume", "--run_dir", str(run), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"run {run} already finished (complete.json: epoch 3" in res.stdout
    assert "nothing to resume" in res.stdout and "Traceback" not in res.stderr
    assert _tree(run) == before


def test_resume_of_a_finished_distributed_run(tmp_path):
    """Distributed: summary.json with the collector at the total; a Ctrl-C'd run's is short of it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"topology": "actor_learner", "total_env_steps": 1000}))
    (run / "summary.json").write_text(json.dumps({"collector": {"env_steps": 1000}}))
    before = _tree(run)
    res = run_cli("--resume", "--run_dir", str(run), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "already finished (summary.json: the collector made 1,000 of 1,000 env steps)" in res.stdout
    assert _tree(run) == before
    check = (
        "from deepcrl.launch.run import finished_note, saved_config; import sys; "
        "print(finished_note(sys.argv[1], saved_config(sys.argv[1])))"
    )
    (run / "summary.json").write_text(json.dumps({"collector": {"env_steps": 400}}))
    res = subprocess.run([sys.executable, "-c", check, str(run)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.strip() == "None", res.stderr[-2000:]


# ----------------------------------------------------------------------------- unusable --run_dir


@pytest.mark.parametrize("resume", [False, True])
def test_run_dir_that_is_a_file_or_under_a_file(tmp_path, resume):
    afile = tmp_path / "afile"
    afile.write_text("not a run\n")
    flags = ["--resume"] if resume else TINY
    before = _tree(tmp_path)
    _one_error(run_cli(*flags, "--run_dir", str(afile), timeout=120), "is a file")
    needle = "does not exist" if resume else f"{afile} is a file, not a directory"
    _one_error(run_cli(*flags, "--run_dir", str(afile / "run"), timeout=120), needle)
    assert _tree(tmp_path) == before


def test_unwritable_run_dir_is_reported_without_creating_anything(tmp_path, monkeypatch):
    """Permissions through os.access (as root chmod blocks nothing, so the check is what is tested)."""
    parent = tmp_path / "parent"
    parent.mkdir()
    check_writable_dir(parent / "a" / "b", "--run_dir")  # writable: fine, and nothing created
    assert list(parent.iterdir()) == []
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != parent)
    with pytest.raises(UsageError, match=f"not writable: no permission to write in its parent {parent}"):
        check_writable_dir(parent / "a" / "b", "--run_dir")
    with pytest.raises(UsageError, match="is not writable: no permission to write in it$"):
        check_writable_dir(parent, "--run_dir")
    assert list(parent.iterdir()) == []


def test_study_dir_that_is_a_file(tmp_path):
    afile = tmp_path / "study"
    afile.write_text("x\n")
    before = _tree(tmp_path)
    res = _cli("study.py", "--study", "depth_sweep", "--scale", "cpu", "--study_dir", str(afile), "--dry_run")
    _one_error(res, "--study_dir")
    assert "is a file" in res.stderr
    assert _tree(tmp_path) == before


# ----------------------------------------------------------------------------- render of no run


def test_render_of_a_run_dir_without_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_ckpt").mkdir()
    (tmp_path / "no_ckpt" / "config.json").write_text(json.dumps({"env": "point_mass"}))
    before = _tree(tmp_path)
    for name, needle in [
        ("nope", "does not exist"),
        ("empty", "holds no run (no config.json)"),
        ("no_ckpt", "holds no checkpoint"),
    ]:
        _one_error(_cli("render.py", "--run_dir", str(tmp_path / name)), needle)
    assert _tree(tmp_path) == before  # no render.mp4 of a random policy


def test_render_names_its_checkpoint_and_prints_its_evaluation(finished_run, tmp_path):
    """The render of a run says which checkpoint acted and prints that policy's evaluation: the numbers
    ``deepcrl.load(run).evaluate()`` gives (the run's eval envs, seed 0)."""
    out = tmp_path / "r.gif"
    res = _cli("render.py", "--run_dir", str(finished_run), "--episodes", "1", "--steps", "5", "--width", "64",
               "--height", "48", "--out", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"policy: single of {finished_run}, checkpoint {finished_run / 'checkpoints' / 'final'}" in res.stdout
    expected = deepcrl.load(finished_run).evaluate()
    line = next(x for x in res.stdout.splitlines() if x.startswith("evaluation: "))
    assert line == "evaluation: " + ", ".join(f"{k.removeprefix('eval/')} {v:.4g}" for k, v in expected.items())
    assert out.is_file()


def test_render_when_no_checkpoint_restores(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    for name in ("final", "latest", "latest.old"):
        _garbage(run / "checkpoints" / name)
    before = _tree(run)
    line = _one_error(_cli("render.py", "--run_dir", str(run)), "no checkpoint restores")
    for name in ("final", "latest", "latest.old"):
        assert f"{run / 'checkpoints' / name} is damaged" in line
    assert _tree(run) == before


@pytest.mark.core
def test_load_policy_falls_back_from_a_damaged_checkpoint(finished_run, tmp_path, capfd):
    run = _copy(finished_run, tmp_path)
    _truncate(run / "checkpoints" / "final")
    capfd.readouterr()
    act = deepcrl.load(run).policy()
    warnings = _lines(capfd.readouterr().err, "warning:")
    assert len(warnings) == 1, warnings
    assert f"{run / 'checkpoints' / 'final'} is damaged" in warnings[0]
    assert f"restored the previous one {run / 'checkpoints' / 'latest'}" in warnings[0]
    assert np.asarray(act(np.zeros((2, 4), np.float32), None)).shape == (2, 2)


# ----------------------------------------------------------------------------- damaged checkpoints (CLI)


def test_damaged_latest_checkpoint_resumes_from_the_previous_one(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path, killed=True)
    ckpts = run / "checkpoints"
    before = _rows(run / "metrics.jsonl")
    old_digests = _digests(ckpts / "latest.old")
    _truncate(ckpts / "latest")
    res = run_cli("--resume", "--run_dir", str(run), "--noprogress")
    assert res.returncode == 0, res.stderr[-3000:]
    warnings = _lines(res.stderr, "warning:")
    assert len(warnings) == 1, res.stderr[-3000:]
    assert f"checkpoint {ckpts / 'latest'} is damaged (" in warnings[0]
    assert warnings[0].endswith(f"; restored the previous one {ckpts / 'latest.old'}")
    assert "Traceback" not in res.stderr and not _lines(res.stderr, "error:")
    rows = _rows(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[:3] == before[:3]  # kept up to the restored checkpoint (epoch 2)
    per_epoch = before[2]["updates"] - before[1]["updates"]
    assert per_epoch > 0 and rows[3]["updates"] == before[2]["updates"] + per_epoch  # continued from it
    assert json.loads((run / "complete.json").read_text())["epoch"] == 3
    # The damaged one was replaced, and the one restored stays as the previous.
    assert _digests(ckpts / "latest.old") == old_digests
    assert sorted(p.name for p in ckpts.iterdir()) == ["final", "latest", "latest.old"]


def test_no_checkpoint_restores_exits_2_naming_both(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path, killed=True)
    ckpts = run / "checkpoints"
    _delete_some(ckpts / "latest")
    _garbage(ckpts / "latest.old")
    before = _tree(run)
    line = _one_error(run_cli("--resume", "--run_dir", str(run), timeout=300), "no checkpoint restores")
    assert f"{ckpts / 'latest'} is damaged (" in line and "is missing" in line
    assert f"{ckpts / 'latest.old'} is damaged (" in line and "CRC32" in line
    assert _tree(run) == before


def test_missing_checkpoint_of_a_run_with_progress_is_not_started_over(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path, killed=True)
    shutil.rmtree(run / "checkpoints")
    before = _tree(run)
    line = _one_error(run_cli("--resume", "--run_dir", str(run), timeout=300), "not starting it over")
    assert "trained 3 epoch(s)" in line and str(run / "checkpoints" / "latest") in line
    assert _tree(run) == before


def test_run_killed_before_its_first_checkpoint_starts_over(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path, killed=True)
    shutil.rmtree(run / "checkpoints")
    first = _rows(run / "metrics.jsonl")[:1]  # only the untrained policy's row
    (run / "metrics.jsonl").write_text(json.dumps(first[0]) + "\n")
    res = run_cli("--resume", "--run_dir", str(run))
    assert res.returncode == 0, res.stderr[-3000:]
    assert not _lines(res.stderr, "warning:") and not _lines(res.stderr, "error:")
    assert [r["epoch"] for r in _rows(run / "metrics.jsonl")] == [0, 1, 2, 3]


def test_k_seeds_keep_the_previous_checkpoint_and_fall_back_to_it(tmp_path):
    run = tmp_path / "run"
    res = run_cli("--run_dir", str(run), *TINY, "--num_seeds", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    ckpts = run / "checkpoints_all_seeds"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "latest.old"]
    (run / "complete.json").unlink()  # as if killed after the last epoch's checkpoint
    _garbage(ckpts / "latest")
    res = run_cli("--resume", "--run_dir", str(run))
    assert res.returncode == 0, res.stderr[-3000:]
    warnings = _lines(res.stderr, "warning:")
    assert len(warnings) == 1 and f"{ckpts / 'latest'} is damaged" in warnings[0], res.stderr[-3000:]
    for folder in (run, run / "seed_0", run / "seed_1"):
        assert [r["epoch"] for r in _rows(folder / "metrics.jsonl")] == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- roles (unit level)


def _write_rows(folder: Path, steps: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"env_steps": s, "updates": 10 * i, "rounds": i} for i, s in enumerate(steps)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _bare_learner(run_dir: Path):
    """A learner with only what checkpointing touches (no env, agent or Reverb sampler)."""
    lr = Learner.__new__(Learner)
    lr.name, lr.dir, lr.config = "learner1_d4", run_dir / "learner1_d4", ConfigDict({"checkpoint": True})
    lr.train_state, lr.key = {"w": np.zeros(4, np.float32)}, np.asarray([0, 7], np.uint32)
    lr.rounds = lr.rows_written = lr._samples_before = 0
    lr._wait_before = lr._wall_before = 0.0
    lr.last_eval, lr._logged_rounds, lr.resumed = {}, -1, False
    return lr


@pytest.mark.core
def test_learner_restores_the_previous_checkpoint_when_the_latest_is_damaged(tmp_path, capfd):
    lr = _bare_learner(tmp_path)
    for k in (1, 2):  # two checkpoints, as at two evaluations
        lr.rounds = lr.rows_written = k
        lr.train_state = {"w": np.full(4, k, np.float32)}
        lr.save_checkpoint(0.0)
    _write_rows(lr.dir, [100, 200, 300])
    _truncate(lr.checkpoint_path)
    back = _bare_learner(tmp_path)
    capfd.readouterr()
    back._restore()
    assert back.resumed and back.rounds == 1 and float(back.train_state["w"][0]) == 1.0
    warnings = _lines(capfd.readouterr().err, "warning:")
    assert len(warnings) == 1 and f"{lr.checkpoint_path} is damaged" in warnings[0], warnings
    assert warnings[0].endswith(f"restored the previous one {previous(lr.checkpoint_path)}")
    assert len(_rows(lr.dir / "metrics.jsonl")) == 1  # rows after the restored checkpoint dropped

    _delete_some(previous(lr.checkpoint_path))
    with pytest.raises(CheckpointError) as failed:
        _bare_learner(tmp_path)._restore()
    message = str(failed.value)
    assert "\n" not in message and str(lr.checkpoint_path) in message
    assert f"{previous(lr.checkpoint_path)} is damaged" in message


@pytest.mark.core
def test_learner_without_a_checkpoint_starts_over_only_without_progress(tmp_path):
    lr = _bare_learner(tmp_path)
    _write_rows(lr.dir, [100, 200, 300])
    with pytest.raises(CheckpointError, match="has 3 metric rows .* not starting it over$"):
        lr._restore()
    assert len(_rows(lr.dir / "metrics.jsonl")) == 3  # left as it was
    _write_rows(lr.dir, [100])  # died before its first checkpoint: only the untrained policy's row
    lr._restore()
    assert not lr.resumed and not (lr.dir / "metrics.jsonl").exists()  # its rows start afresh


def _bare_collector(run_dir: Path):
    """A collector with only what its record and coverage touch (no env, agent or Reverb writer)."""
    c = Collector.__new__(Collector)
    c.dir = run_dir / "collector"
    c.dir.mkdir(parents=True, exist_ok=True)
    c.coverage, c.key = {"visits": np.zeros(3, np.float32)}, np.asarray([0, 7], np.uint32)
    c.env_steps = c.collections = c.segments_written = c.fetch_failures = 0
    c._logged_at, c.resumed = -1, False
    return c


@pytest.mark.core
def test_collector_record_and_coverage_fall_back_to_the_previous_ones(tmp_path, capfd):
    c = _bare_collector(tmp_path)
    for k in (1, 2):  # two collection steps, each saving the record and the coverage
        c.env_steps, c.collections = 100 * k, k
        c.coverage = {"visits": np.full(3, k, np.float32)}
        c._save_record()
        c._save_coverage()
    record, coverage = c.dir / "checkpoint.json", c.dir / "coverage.npz"
    assert json.loads((c.dir / "checkpoint.json.old").read_text())["env_steps"] == 100
    _write_rows(c.dir, [100, 200])

    record.write_text('{"env_steps": 200, "collec')  # a truncated record
    back = _bare_collector(tmp_path)
    capfd.readouterr()
    back._restore()
    assert (back.env_steps, back.collections, back.resumed) == (100, 1, True)
    assert float(back.coverage["visits"][0]) == 2.0  # the coverage file itself was fine
    warnings = _lines(capfd.readouterr().err, "warning:")
    assert len(warnings) == 1 and f"collector record {record} is damaged (JSONDecodeError" in warnings[0]
    assert warnings[0].endswith(f"restored the previous one {record}.old")

    record.write_text('{"env_steps": 300}')  # parses, but a field is missing
    coverage.write_bytes(b"garbage")
    back = _bare_collector(tmp_path)
    back._restore()
    assert back.env_steps == 100 and float(back.coverage["visits"][0]) == 1.0
    warnings = _lines(capfd.readouterr().err, "warning:")
    assert len(warnings) == 2 and "(KeyError: 'collections')" in warnings[0], warnings
    assert f"collector coverage {coverage} is damaged" in warnings[1]

    (c.dir / "checkpoint.json.old").write_text("")
    with pytest.raises(CheckpointError) as failed:
        _bare_collector(tmp_path)._restore()
    assert str(failed.value).startswith(f"no collector record restores: {record} is damaged (KeyError")
    assert f"{record}.old is damaged (JSONDecodeError" in str(failed.value)


@pytest.mark.core
def test_collector_without_a_record_starts_over_only_without_progress(tmp_path):
    c = _bare_collector(tmp_path)
    _write_rows(c.dir, [100, 200, 300])
    with pytest.raises(CheckpointError, match="collector has 3 metric rows"):
        c._restore()
    _write_rows(c.dir, [100])
    c._restore()
    assert not c.resumed and not (c.dir / "metrics.jsonl").exists()


# Not core: a checkpoint without a manifest was written by the pinned stack (before manifests); how
# Orbax fails on its damaged files differs across Orbax versions (today's restored one silently).
def test_orbax_checkpoint_without_manifest_falls_back_on_orbax_errors(tmp_path, capfd):
    """Checkpoints written before the manifest existed: Orbax's own error is the reason."""
    path = tmp_path / "latest"
    for k in (1, 2):
        save_train_state(path, {"w": np.full(4, k, np.float32)})
    for p in (path, previous(path)):
        (p / MANIFEST).unlink()
    (path / "_METADATA").unlink()  # half deleted
    capfd.readouterr()
    assert float(restore_train_state(path, {"w": np.zeros(4, np.float32)})["w"][0]) == 1.0
    warnings = _lines(capfd.readouterr().err, "warning:")
    assert len(warnings) == 1 and f"{path} is damaged (FileNotFoundError" in warnings[0], warnings
