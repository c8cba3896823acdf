"""wandb, offline (no network): a run with ``--wandb`` sends every metrics row, its config and its plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import run_cli
from test_quiet import TINY

from deepcrl.rundir.metrics import wandb_target


def _records(run_file: Path) -> list:
    """The records of an offline wandb run file (what `wandb sync` would upload)."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    store = datastore.DataStore()
    store.open_for_scan(str(run_file))
    records = []
    while (data := store.scan_data()) is not None:
        record = pb.Record()
        record.ParseFromString(data)
        records.append(record)
    return records


def _history(record) -> dict:
    return {
        "/".join([i.key] if i.key else list(i.nested_key)): json.loads(i.value_json)
        for i in record.history.item
    }


def test_offline_single_run_logs_every_row_config_and_plot(tmp_path):
    run_dir, wandb_dir = tmp_path / "run", tmp_path / "wandb_files"
    env = dict(os.environ, WANDB_DIR=str(wandb_dir), WANDB_MODE="offline", WANDB_SILENT="true")
    res = run_cli(
        *TINY, "--run_dir", str(run_dir), "--wandb", "deepcrl-test", "--set", "wandb_mode=offline", env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    offline = list(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(offline) == 1, list(wandb_dir.rglob("*"))
    records = _records(offline[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.project, run.run_group, run.job_type) == ("deepcrl-test", "run", "single")
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["env"] == "point_mass" and config["wandb_project"] == "deepcrl-test"
    history = [_history(r) for r in records if r.WhichOneof("record_type") == "history"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [h for h in history if "epoch" in h]  # the image row repeats env_steps (the x axis)
    assert [h["env_steps"] for h in logged] == [r["env_steps"] for r in rows]
    assert [h["eval/success"] for h in logged] == [r["eval/success"] for r in rows]
    images = [h for h in history if any(k.startswith("plots/success") for k in h)]
    assert images and images[0]["plots/success/_type"] == "image-file"


def test_online_without_a_login_is_a_usage_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["WANDB_CONFIG_DIR"] = str(tmp_path / "no_login")  # no stored API key either
    res = run_cli(*TINY, "--run_dir", str(tmp_path / "run"), "--wandb", "p", env=env, timeout=300)
    assert res.returncode == 2 and "wandb login" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


def test_wandb_target_groups_roles_by_run_dir(tmp_path):
    run_dir = tmp_path / "my_run"
    (run_dir / "learner_0").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"topology": "actor_learner", "wandb_project": ""}))
    assert wandb_target(run_dir) is None and wandb_target(run_dir / "learner_0") is None
    (run_dir / "config.json").write_text(json.dumps({"topology": "actor_learner", "wandb_project": "p"}))
    (run_dir / "learner_0" / "config.json").write_text(json.dumps({"critic_depth": 8, "wandb_project": "p"}))
    config, group, job, name = wandb_target(run_dir / "learner_0")
    assert (group, job, name, config["critic_depth"]) == ("my_run", "learner_0", "my_run/learner_0", 8)
    assert wandb_target(run_dir)[1:] == ("my_run", "actor_learner", "my_run")
    # A study groups its runs: every run (and role) in the study's group, each named by its run directory.
    (run_dir / "config.json").write_text(json.dumps({"wandb_project": "p", "wandb_group": "depth_sweep-cpu"}))
    assert wandb_target(run_dir / "learner_0")[1:] == ("depth_sweep-cpu", "learner_0", "my_run/learner_0")
