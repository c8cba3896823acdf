"""Crash-safe checkpoints: Orbax train states and small JSON records, written atomically.

A kill -9 at any instant of a save leaves a usable checkpoint: the new one is
written completely into a hidden temporary folder next to the target and only
then swapped in by renames, and ``restore_train_state`` / ``resolve`` fall back
to the previous one (``NAME.old``) when the kill fell between the two renames.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp

# Test hook (tests/test_faults.py): pause at a named point of a save so a kill can land there.
_PAUSE_AT = os.environ.get("DEEPCRL_CHECKPOINT_PAUSE_AT", "")


def _pause(point: str) -> None:
    if _PAUSE_AT == point:
        print(f"checkpoint paused at {point}", flush=True)
        time.sleep(3600)


def _old(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def resolve(path: Path) -> Path | None:
    """The usable checkpoint saved at ``path``: itself, else its previous version, else None."""
    path = Path(path)
    for p in (path, _old(path)):
        if p.exists():
            return p
    return None


def _swap_in(tmp: Path, path: Path) -> None:
    """Replace ``path`` by the complete ``tmp``; at every instant ``resolve(path)`` finds a whole one."""
    old = _old(path)
    if path.exists():
        if old.exists():  # left by an earlier interrupted swap; ``path`` is whole, so drop it
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        os.rename(path, old)
    _pause("between_renames")
    os.rename(tmp, path)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")


def _clean_stale_tmp(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def save_train_state(path: Path, train_state) -> Path:
    """Save any pytree with Orbax, atomically (see the module docstring)."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(path)
    tmp = _tmp_name(path)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp, jax.device_get(train_state))
    ckptr.wait_until_finished()
    _pause("before_swap")
    _swap_in(tmp, path)
    return path


def restore_train_state(path: Path, target):
    """Restore what ``save_train_state(path, ...)`` wrote, or its previous version after a crash."""
    found = resolve(Path(path).absolute())
    if found is None:
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckptr = ocp.StandardCheckpointer()
    try:
        return ckptr.restore(found, target=jax.device_get(target))
    except ValueError:
        # A resume checkpoint ({"train_state": ..., "key": ..., counters}) asked for its train state
        # alone (rendering a run's latest agent): restore it whole, the rest by its saved shapes.
        tree = ckptr.metadata(found)
        tree = getattr(getattr(tree, "item_metadata", tree), "tree", tree)
        if not isinstance(tree, dict) or "train_state" not in tree:
            raise
        is_leaf = lambda m: hasattr(m, "shape") and hasattr(m, "dtype")  # noqa: E731
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), dict(tree), is_leaf=is_leaf)
        abstract["train_state"] = jax.device_get(target)
        return ckptr.restore(found, target=abstract)["train_state"]


def write_json_atomic(path: Path, obj, fsync: bool = True) -> Path:
    """Write JSON so that readers (and a crash) only ever see the old or the new whole file.

    ``fsync=False`` is still atomic for a killed process; only a machine crash may lose the update.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with tmp.open("w") as f:
        f.write(json.dumps(obj, indent=2, default=str) + "\n")
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint folder under ``run_dir`` (searched recursively)."""
    candidates = sorted(Path(run_dir).glob("**/checkpoints/*"), key=lambda p: p.stat().st_mtime)
    candidates = [p for p in candidates if p.is_dir() and not p.name.startswith(".")]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint under {run_dir}")
    return candidates[-1]
