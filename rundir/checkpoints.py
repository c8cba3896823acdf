"""Orbax checkpoints of a train state (any pytree): save, restore, find the newest."""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


def save_train_state(path: Path, train_state) -> Path:
    path = Path(path).absolute()
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, jax.device_get(train_state), force=True)
    ckptr.wait_until_finished()
    return path


def restore_train_state(path: Path, target):
    ckptr = ocp.StandardCheckpointer()
    return ckptr.restore(Path(path).absolute(), target=jax.device_get(target))


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint folder under ``run_dir`` (searched recursively)."""
    candidates = sorted(Path(run_dir).glob("**/checkpoints/*"), key=lambda p: p.stat().st_mtime)
    candidates = [p for p in candidates if p.is_dir()]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint under {run_dir}")
    return candidates[-1]
