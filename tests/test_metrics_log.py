"""``rundir/metrics.MetricsLog``: ``metrics.csv`` always equals ``metrics.jsonl`` (every field, every row)."""

from __future__ import annotations

import pytest
from metrics_files import assert_csv_equals_jsonl

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
