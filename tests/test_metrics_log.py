"""Metrics files: ``metrics.csv`` always equals ``metrics.jsonl`` (every field, every row), and a
restarted role's ``wall_time`` goes on."""

from __future__ import annotations

import time

import numpy as np
import pytest
from metrics_files import assert_csv_equals_jsonl

from deepcrl.roles.collector import Collector
from deepcrl.rundir.metrics import MetricsLog, truncate_metrics


def _log(folder):
    return MetricsLog(folder, tensorboard=False, wandb=False)


@pytest.mark.core
def test_a_column_appearing_later_widens_the_csv(tmp_path):
    log = _log(tmp_path)
    log.write(0, {"epoch": 0, "eval/success": 0.0})  # the untrained policy: no training metrics yet
    log.write(100, {"epoch": 1, "eval/success": 0.5, "critic/loss": 1.25, "wall_time": 3.0})
    log.write(200, {"epoch": 2, "eval/success": 1.0, "critic/loss": 0.75, "wall_time": 6.0})
    log.write(300, {"epoch": 3, "note": "nan"})  # fewer fields: empty cells
    rows = assert_csv_equals_jsonl(tmp_path)
    assert len(rows) == 4
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == "env_steps,epoch,eval/success,critic/loss,wall_time,note"


@pytest.mark.core
def test_the_csv_keeps_every_row_across_a_resume(tmp_path):
    log = _log(tmp_path)
    for e in range(4):
        log.write(100 * e, {"epoch": e, **({"critic/loss": 1.0 / e} if e else {})})
    log.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"env_steps": 400, "ep')  # torn by a kill
    truncate_metrics(tmp_path, keep=lambda row: row["epoch"] <= 2)  # rows after the checkpoint dropped
    assert [r["epoch"] for r in assert_csv_equals_jsonl(tmp_path)] == [0, 1, 2]
    again = _log(tmp_path)  # the resumed run's log: appends, never starts the csv over
    again.write(300, {"epoch": 3, "critic/loss": 0.25, "wall_time": 9.0})
    assert [r["epoch"] for r in assert_csv_equals_jsonl(tmp_path)] == [0, 1, 2, 3]
    truncate_metrics(tmp_path, keep=lambda row: False)
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.core
def test_collector_wall_time_goes_on_across_a_restart(tmp_path):
    """Its record keeps the wall time; a restored collector's rows go on from there (rates do not:
    they count this life)."""

    def bare() -> Collector:  # only what its record touches (no env, agent or Reverb writer)
        c = Collector.__new__(Collector)
        c.dir = tmp_path / "collector"
        c.coverage, c.key = {"visits": np.zeros(3, np.float32)}, np.asarray([0, 7], np.uint32)
        c.env_steps = c.collections = c.segments_written = c.fetch_failures = 0
        c._logged_at, c.resumed = -1, False
        return c

    c = bare()
    c.dir.mkdir(parents=True)
    c._started = time.time() - 7.0  # 7 s into its first life
    c.env_steps, c.collections = 100, 1
    c._save_record()
    log = _log(c.dir)
    log.write(100, {"wall_time": 6.5})
    log.write(200, {"wall_time": 9.0})  # after the record: dropped on restore
    back = bare()
    back._restore()
    assert back.env_steps == 100 and [r["env_steps"] for r in assert_csv_equals_jsonl(c.dir)] == [100]
    assert 7.0 <= back._wall_time() < 8.0  # not started yet: where the record left off
    back._started = time.time() - 2.0
    assert 9.0 <= back._wall_time() < 10.0
