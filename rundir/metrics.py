"""What a run writes as it goes: resolved config and metrics (JSONL, CSV, TensorBoard).

One ``MetricsLog`` per role, each in its own folder of the run directory, so a
distributed run and a single run produce the same files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def default_run_dir(env: str, topology: str) -> Path:
    return Path("runs") / f"{env}-{topology}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_config(run_dir: Path, config) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def _scalar(v: Any) -> float | int | str:
    if isinstance(v, (str, int)):
        return v
    v = float(np.asarray(v))
    return v if math.isfinite(v) else str(v)


class MetricsLog:
    """Appends rows to ``metrics.jsonl`` and ``metrics.csv`` and scalars to TensorBoard."""

    def __init__(self, folder: Path, tensorboard: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.folder / "metrics.jsonl"
        self.csv_path = self.folder / "metrics.csv"
        self._csv_fields: list[str] | None = None
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter  # no TensorFlow import

            self._tb = SummaryWriter(str(self.folder / "tensorboard"))

    def write(self, step: int, row: dict[str, Any]) -> dict:
        row = {"env_steps": int(step), **{k: _scalar(v) for k, v in row.items()}}
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._csv_fields is None:
            self._csv_fields = list(row)
            with self.csv_path.open("w", newline="") as f:
                csv.DictWriter(f, self._csv_fields).writeheader()
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, self._csv_fields, extrasaction="ignore").writerow(row)
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, float):
                    self._tb.add_scalar(k, v, int(step))
            self._tb.flush()
        return row

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(folder: Path, keep) -> None:
    """Keep only the metric rows for which ``keep(row)`` holds (used when a run resumes)."""
    folder = Path(folder)
    rows = [r for r in read_metrics(folder / "metrics.jsonl") if keep(r)]
    for name in ("metrics.jsonl", "metrics.csv"):
        (folder / name).unlink(missing_ok=True)
    if rows:
        log = MetricsLog(folder, tensorboard=False)
        for r in rows:
            log.write(r.pop("env_steps"), r)


def ensure_writable(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise PermissionError(f"run directory {run_dir} is not writable")
    return run_dir
