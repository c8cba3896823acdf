"""What a run writes as it goes: resolved config and metrics (JSONL, CSV, TensorBoard, wandb).

One ``MetricsLog`` per role, each in its own folder of the run directory, so a
distributed run and a single run produce the same files.

wandb is optional: a run whose ``config.json`` sets ``wandb_project`` also sends
every row to a wandb run (with the config, and the folder's plots at the end);
wandb is imported only then. All the wandb runs of one run directory share a
group (``wandb_group``, default the run directory's name); each role is one
wandb run whose job type is the role (``single``, ``collector``, ``learner_0``, ...).
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

WANDB_MODES = ("online", "offline", "disabled")
# The headline metrics of an evaluation (collector/rollout.evaluate), under the one name every row,
# summary and study result uses: steps at the goal per episode (the paper's metric), the same as a
# fraction of the episode, and whether the goal was reached at any time.
HEADLINE = ("eval/time_at_goal", "eval/time_at_goal_frac", "eval/success")
# (Before issue 18, summary.json's learner rows named them final_time_at_goal, final_time_at_goal_frac
# and final_success; nothing of ours reads those rows' metrics back, so old run directories still work.)


def default_run_dir(env: str, topology: str) -> Path:
    """``runs/<env>-<topology>-<time>``, unique even for two runs started in the same second."""
    base = Path("runs") / f"{env}-{topology}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def write_config(run_dir: Path, config) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def _scalar(v: Any) -> float | int | str:
    if isinstance(v, (str, int)):
        return v
    v = float(np.asarray(v))
    return v if math.isfinite(v) else str(v)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wandb_target(folder: Path) -> tuple[dict, str, str, str] | None:
    """``(config, group, job_type, name)`` if the run ``folder`` belongs to asks for wandb, else None.

    A folder whose parent holds a ``config.json`` is a role (or seed) of that run
    directory (job type: the folder's name); otherwise the folder is the run
    directory itself (job type: its topology). The group defaults to the run
    directory's name; a study sets ``wandb_group`` to group all its runs.
    """
    folder = Path(folder).absolute()
    parent = _read_json(folder.parent / "config.json")
    if parent is not None and parent.get("wandb_project"):
        own = _read_json(folder / "config.json") or parent
        run = folder.parent.name
        return own, parent.get("wandb_group") or run, folder.name, f"{run}/{folder.name}"
    own = _read_json(folder / "config.json")
    if own is not None and own.get("wandb_project"):
        return own, own.get("wandb_group") or folder.name, str(own.get("topology") or "run"), folder.name
    return None


def wandb_mode(config) -> str:
    """The config's ``wandb_mode``; unset: ``$WANDB_MODE``, else online."""
    return config.get("wandb_mode") or os.environ.get("WANDB_MODE") or "online"


def wandb_problem(config) -> str | None:
    """Why a config's wandb settings cannot work (checked before any role starts), or None."""
    if not config.get("wandb_project"):
        return None
    mode = wandb_mode(config)
    if mode not in WANDB_MODES:
        return f"wandb_mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}"
    if mode == "online":
        import wandb

        if not wandb.api.api_key:
            return "wandb_mode=online needs `wandb login` (or WANDB_API_KEY); or --set wandb_mode=offline"
    return None


class WandbRun:
    """One wandb run: numeric fields of every metrics row (x axis: env steps), the config, plots."""

    def __init__(self, folder: Path, config: dict, group: str, job_type: str, name: str):
        import wandb  # only runs that ask for wandb import it

        mode = wandb_mode(config)
        if mode not in WANDB_MODES:
            raise ValueError(f"wandb_mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        self._wandb = wandb
        self.run = wandb.init(
            project=config["wandb_project"],
            entity=config.get("wandb_entity") or None,
            group=group,
            job_type=job_type,
            name=name,
            config=config,
            dir=os.environ.get("WANDB_DIR") or str(folder),
            mode=mode,
            reinit="create_new",  # several roles or seeds may log from one process
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run.define_metric("*", step_metric="env_steps")

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(
            {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        )

    def finish(self, folder: Path) -> None:
        images = {f"plots/{p.stem}": self._wandb.Image(str(p)) for p in sorted(Path(folder).glob("*.png"))}
        if images:
            self.run.log(images)
        self.run.finish()


def publish_to_wandb(
    run_dir: Path, job_type: str, summary: dict | None = None, config: dict | None = None
) -> None:
    """Send a folder's plots and a summary as one more wandb run of its group (no-op without wandb).

    The distributed driver calls this after drawing ``success.png`` (the roles'
    wandb runs have finished by then), a study after writing its report.
    ``config`` defaults to the folder's ``config.json``.
    """
    run_dir = Path(run_dir).absolute()
    config = config if config is not None else _read_json(run_dir / "config.json")
    if not config or not config.get("wandb_project"):
        return
    group = config.get("wandb_group") or run_dir.name
    sink = WandbRun(run_dir, config, group, job_type, f"{run_dir.name}/{job_type}")
    if summary:
        sink.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    sink.finish(run_dir)


class MetricsLog:
    """Appends rows to ``metrics.jsonl`` and ``metrics.csv`` and scalars to TensorBoard (and wandb).

    ``wandb=None`` follows the run's ``config.json`` (see ``wandb_target``); ``False`` never logs there.
    """

    def __init__(self, folder: Path, tensorboard: bool = True, wandb: bool | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.folder / "metrics.jsonl"
        self.csv_path = self.folder / "metrics.csv"
        self._csv_fields = write_csv(self.csv_path, _rows(self.jsonl_path))  # with the rows of earlier lives
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter  # no TensorFlow import

            self._tb = SummaryWriter(str(self.folder / "tensorboard"))
            self._hparams_end = _write_hparams(self._tb, self.folder)
        target = wandb_target(self.folder) if wandb is not False else None
        self._wandb = WandbRun(self.folder, *target) if target else None

    def write(self, step: int, row: dict[str, Any]) -> dict:
        row = {"env_steps": int(step), **{k: _scalar(v) for k, v in row.items()}}
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if all(k in self._csv_fields for k in row) and self.csv_path.exists():
            with self.csv_path.open("a", newline="") as f:
                csv.DictWriter(f, self._csv_fields, restval="").writerow(row)
        else:  # a new column (a metric first logged now): the file widens, earlier rows leave it empty
            self._csv_fields = write_csv(self.csv_path, _rows(self.jsonl_path), self._csv_fields)
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, float):
                    self._tb.add_scalar(k, v, int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(row)
        return row

    def close(self) -> None:
        if self._tb is not None:
            if self._hparams_end is not None:
                self._tb.file_writer.add_summary(self._hparams_end)
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish(self.folder)  # with the folder's plots, if drawn before close
            self._wandb = None


HPARAM_METRICS = ("eval/time_at_goal", "eval/time_at_goal_frac", "eval/success")


def hparams_of(config: dict) -> dict:
    """The config's settings as TensorBoard hparams: every number, string and flag (tag and notes too)."""
    return {k: v for k, v in sorted(config.items()) if isinstance(v, (bool, int, float, str))}


def _write_hparams(tb, folder: Path):
    """The run's config (``folder``'s, else its run directory's) as TensorBoard hparams, against the
    evaluation metrics this folder logs; returns the session-end summary to write at close (or None)."""
    from tensorboardX.summary import hparams

    config = _read_json(folder / "config.json") or _read_json(folder.parent / "config.json")
    if not config:
        return None
    experiment, start, end = hparams(hparams_of(config), dict.fromkeys(HPARAM_METRICS, 0.0))
    tb.file_writer.add_summary(experiment)
    tb.file_writer.add_summary(start)
    return end


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> list[str]:
    """Write ``rows`` as ``path`` whole (every field, columns in first-seen order after ``fields``),
    atomically; no rows: no file. Returns the columns.

    ``metrics.csv`` is rewritten from ``metrics.jsonl`` whenever a column appears or a log opens, so it
    always holds the JSONL's rows, all their fields, across resumes (rows are few: this is cheap).
    """
    fields = list(fields or [])
    for row in rows:
        fields += [k for k in row if k not in fields]
    if not rows:
        Path(path).unlink(missing_ok=True)
        return fields
    tmp = Path(path).with_name(f".{Path(path).name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return fields


def truncate_metrics(folder: Path, keep) -> None:
    """Keep only the metric rows for which ``keep(row)`` holds (used when a run resumes).

    Kept rows stay byte for byte; a line torn by a killed process is dropped. The CSV follows.
    """
    folder = Path(folder)
    path = folder / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    kept = [(line, row) for line in lines if (row := _parse(line)) is not None and keep(row)]
    if kept:  # replaced at once: a kill meanwhile leaves the old rows, not half of them
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line if line.endswith("\n") else line + "\n" for line, _ in kept))
        os.replace(tmp, path)
    else:
        path.unlink(missing_ok=True)
    write_csv(folder / "metrics.csv", [row for _, row in kept])


def _rows(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``, without a line torn by a killed process."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [row for line in lines if (row := _parse(line)) is not None]


def _parse(line: str) -> dict | None:
    try:
        return json.loads(line) if line.strip() else None
    except ValueError:
        return None


def ensure_writable(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise PermissionError(f"run directory {run_dir} is not writable")
    return run_dir
