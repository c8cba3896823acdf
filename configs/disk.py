"""What a run will write to disk, checked against the free space of its run directory before it starts.

The estimate errs high: every checkpoint counted as many times as it can exist at once (the latest,
the previous one kept beside it, a new one being written; a learner's final one too), replay checkpoints
at the tables' full size uncompressed, and a margin per role for metrics, TensorBoard events, plots and
logs. A resumed run needs only what it adds to what its directory already holds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from deepcrl.configs.budget import actor_bytes, fmt, train_state_bytes
from deepcrl.configs.experiment import Experiment
from deepcrl.configs.validation import ConfigError

COPIES = 3  # latest + previous + the one being written
LOGS_PER_ROLE = 16 * 2**20  # metrics (JSONL, CSV), TensorBoard events, plots, console logs


def estimate(exp: Experiment) -> dict[str, int]:
    """Bytes a run writes at most, by kind."""
    c = exp.config
    keep = bool(c.get("checkpoint", True))
    if not exp.distributed:
        seeds = exp.num_seeds
        state = train_state_bytes(exp.agent)
        return {
            "checkpoints": keep * (COPIES + 1) * seeds * state,  # resume state, and each seed's final one
            "metrics and logs": LOGS_PER_ROLE * (1 + (seeds > 1) * seeds),
        }
    learners = sum((COPIES + 1) * train_state_bytes(exp.agents[r.name]) for r in exp.learners)
    collector = COPIES * actor_bytes(exp.agent) if exp.collector is not None else 0
    spec = exp.replay
    replay = COPIES * spec.capacity_items * spec.segment_length * spec.bytes_per_step()
    return {
        "checkpoints": keep * (learners + collector),
        "replay checkpoints": replay if exp.collector is not None else replay // COPIES,
        "metrics and logs": LOGS_PER_ROLE * (len(exp.learners) + 2),
    }


def _existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _size_of(folder: Path) -> int:
    """Bytes already under ``folder`` (what a resumed run's new files will mostly replace)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def check(exp: Experiment, run_dir: Path, resume: bool = False) -> dict:
    """The estimate against the free space where ``run_dir`` lives; ``ConfigError`` (one line, with the
    figures and the knobs) when it cannot fit. Returns ``{need, free, where, parts}``."""
    parts = estimate(exp)
    need = sum(parts.values())
    if resume and Path(run_dir).is_dir():
        need = max(0, need - _size_of(Path(run_dir)))
    where = _existing_ancestor(Path(run_dir))
    free = shutil.disk_usage(where).free
    if need > free:
        detail = ", ".join(f"{k} {fmt(v)}" for k, v in parts.items() if v)
        knobs = ["free space there", "give a --run_dir on a larger disk"]
        if parts.get("replay checkpoints"):
            knobs.append("lower replay_steps_per_env")
        if parts.get("checkpoints"):
            knobs.append("--set checkpoint=false (no resume)")
        raise ConfigError(
            f"the run writes up to ~{fmt(need)} ({detail}) but the file system of {where} has {fmt(free)} free; "
            f"{', or '.join(knobs)}"
        )
    return {"need": need, "free": free, "where": str(where), "parts": parts}
