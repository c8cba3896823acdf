"""Crash-safe checkpoints: Orbax train states and small JSON records, written atomically.

A kill -9 at any instant of a save leaves a usable checkpoint: the new one is
written completely into a hidden temporary folder next to the target and only
then swapped in by renames. The previous complete checkpoint stays beside it as
``NAME.old`` (one back, no more), so a damaged latest one (truncated or deleted
files, corrupted bytes) costs one checkpoint's progress, not the run:
``restore_train_state`` / ``restore_with_fallback`` restore ``NAME.old`` with one
``warning:`` line on stderr, and raise ``CheckpointError`` (one line naming the
files tried) when neither restores; the next save then replaces the damaged one
and keeps the restored one as the previous. Each Orbax checkpoint carries a
manifest of its files' sizes and CRC32s, checked before Orbax reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

# Test hook (tests/test_faults.py): pause at a named point of a save so a kill can land there.
_PAUSE_AT = os.environ.get("DEEPCRL_CHECKPOINT_PAUSE_AT", "")


def _pause(point: str) -> None:
    if _PAUSE_AT == point:
        print(f"checkpoint paused at {point}", flush=True)
        time.sleep(3600)


T = TypeVar("T")
MANIFEST = "deepcrl_manifest.json"  # inside each Orbax checkpoint: {relative path: [size, crc32]}
# Checkpoints this process found damaged: the next save replaces them without making them the
# previous one, so the good previous one (restored instead) stays.
_damaged: set[Path] = set()


class CheckpointError(Exception):
    """No checkpoint restores where one is needed; the message is one line naming the files tried."""


def previous(path: Path) -> Path:
    """Where the checkpoint saved at ``path`` before the latest one is kept."""
    path = Path(path)
    return path.with_name(path.name + ".old")


def resolve(path: Path) -> Path | None:
    """The checkpoint saved at ``path``: itself, else its previous version, else None (nothing there)."""
    path = Path(path)
    for p in (path, previous(path)):
        if p.exists():
            return p
    return None


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def _swap_in(tmp: Path, path: Path) -> None:
    """Make the complete ``tmp`` the checkpoint at ``path``, the one it replaces ``previous(path)``.

    At every instant ``path`` or ``previous(path)`` is whole: a kill between the two renames
    leaves ``path`` missing and the last complete one at ``previous(path)``, which the next save keeps.
    """
    old = previous(path)
    if path.absolute() in _damaged:  # it failed to restore: drop it, keep the previous one
        _damaged.discard(path.absolute())
        _remove(path)
    if path.exists():
        if old.exists():  # the one before the previous: dropped while ``path`` is whole
            _remove(old)
        os.rename(path, old)
    _pause("between_renames")
    os.rename(tmp, path)


def replace_keeping_previous(tmp: Path, path: Path) -> None:
    """``os.replace(tmp, path)`` for a file, keeping the file it replaces as ``previous(path)``.

    The current file is hard-linked (copied where links fail) to the previous name first, so
    ``path`` itself never goes missing.
    """
    path = Path(path)
    if path.exists() and path.absolute() not in _damaged:
        link = _tmp_name(previous(path))
        try:
            os.link(path, link)
        except OSError:
            shutil.copy2(path, link)
        os.replace(link, previous(path))
    os.replace(tmp, path)
    _damaged.discard(path.absolute())


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
    write_manifest(tmp)
    _pause("before_swap")
    _swap_in(tmp, path)
    return path


def write_manifest(folder: Path) -> None:
    """``folder/MANIFEST``: every other file's size and CRC32 (written whole or not at all)."""
    folder = Path(folder)
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name != MANIFEST)
    manifest = {str(f.relative_to(folder)): [f.stat().st_size, _crc32(f)] for f in files}
    tmp = _tmp_name(folder / MANIFEST)
    tmp.write_text(json.dumps(manifest, indent=0) + "\n")
    os.replace(tmp, folder / MANIFEST)


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def check_manifest(folder: Path) -> None:
    """Raise ``_Damaged`` naming the first file that is missing or differs from the manifest.

    Checked before Orbax reads the checkpoint: a damaged one then fails here with a clear reason
    (Orbax's own errors are long, and a failed read of its can print a stray asyncio traceback).
    Checkpoints written before manifests existed pass unchecked.
    """
    if not folder.is_dir():
        raise _Damaged("not a folder")
    manifest = folder / MANIFEST
    if not manifest.exists():
        if not any(folder.iterdir()):
            raise _Damaged("empty folder")
        return
    try:
        expected = json.loads(manifest.read_text())
    except ValueError:
        raise _Damaged(f"{MANIFEST} does not parse") from None
    for name, (size, crc) in expected.items():
        f = folder / name
        if not f.is_file():
            raise _Damaged(f"{name} is missing")
        if f.stat().st_size != size:
            raise _Damaged(f"{name} has {f.stat().st_size} of its {size} bytes")
        if _crc32(f) != crc:
            raise _Damaged(f"{name} has corrupted bytes: CRC32 differs")


class _Damaged(ValueError):
    """A file of a checkpoint is missing or differs from what was written."""


def _reason(e: BaseException) -> str:
    """An exception in a few words, on one line."""
    text = " ".join(str(e).split())
    text = text if len(text) <= 120 else text[:117] + "..."
    return text if isinstance(e, _Damaged) else f"{type(e).__name__}: {text}"


def restore_first(paths: list[Path], load: Callable[[Path], T], what: str = "checkpoint") -> T:
    """``load`` the first of ``paths`` that loads; one ``warning:`` line on stderr if it is not the first.

    A path that does not exist is skipped. When none loads, ``CheckpointError`` names every path
    tried and why it failed, on one line.
    """
    tried: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        if not path.exists():
            tried.append((path, "missing"))
            continue
        try:
            value = load(path)
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint can fail in many ways
            tried.append((path, f"damaged ({_reason(e)})"))
            _damaged.add(path.absolute())
            continue
        if tried:  # the one asked for, and any damaged one after it (a missing fallback is no news)
            bad = "; ".join(f"{p} is {why}" for i, (p, why) in enumerate(tried) if i == 0 or why != "missing")
            print(f"warning: {what} {bad}; restored the previous one {path}", file=sys.stderr, flush=True)
        return value
    if all(why == "missing" for _, why in tried):
        raise CheckpointError(f"no {what} at {' or '.join(str(p) for p, _ in tried)}")
    raise CheckpointError(f"no {what} restores: " + "; ".join(f"{p} is {why}" for p, why in tried))


def restore_with_fallback(path: Path, load: Callable[[Path], T], what: str = "checkpoint") -> T:
    """``load(path)``, else ``load(previous(path))`` with a warning; else ``CheckpointError``."""
    return restore_first([Path(path), previous(path)], load, what)


def restore_train_state(path: Path, target, fallbacks: list[Path] | None = None):
    """Restore what ``save_train_state(path, ...)`` wrote, else its previous version (see
    ``restore_first``), else each of ``fallbacks`` in turn; ``CheckpointError`` when none restores.

    Leaves that are JAX arrays in ``target`` come back as JAX arrays in memory XLA allocated, the
    others as numpy (see ``_owned_by_jax``)."""
    path = Path(path).absolute()
    paths = [path, previous(path), *(Path(p).absolute() for p in fallbacks or [])]
    return restore_first(paths, lambda found: _owned_by_jax(_restore_orbax(found, target), target))


def _owned_by_jax(restored, target):
    """Copy into XLA's own buffers the restored leaves that ``target`` holds as JAX arrays.

    Orbax returns numpy arrays, and a numpy array passed to a jitted function on CPU is used in
    place (zero-copy). An executable loaded from JAX's persistent compilation cache (jaxlib 0.4.34,
    CPU) then writes a donated argument's result into that numpy memory and returns an array that
    points there; once numpy frees it, the train state is freed memory: a restarted learner (or a
    resumed ``single``) crashed with heap corruption at its first updates (docs/testing.md).
    """

    def own(saved, like):
        return jnp.array(saved) if isinstance(like, jax.Array) and isinstance(saved, np.ndarray) else saved

    return jax.tree_util.tree_map(own, restored, target)


def _restore_orbax(found: Path, target):
    check_manifest(found)
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


def write_json_atomic(path: Path, obj, fsync: bool = True, keep_previous: bool = False) -> Path:
    """Write JSON so that readers (and a crash) only ever see the old or the new whole file.

    ``fsync=False`` is still atomic for a killed process; only a machine crash may lose the update.
    ``keep_previous`` keeps the file it replaces as ``previous(path)`` (a checkpoint record).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with tmp.open("w") as f:
        f.write(json.dumps(obj, indent=2, default=str) + "\n")
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    if keep_previous:
        replace_keeping_previous(tmp, path)
    else:
        os.replace(tmp, path)
    return path


def read_json(path: Path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def siblings(checkpoint: Path) -> list[Path]:
    """The other checkpoints of ``checkpoint``'s folder (not its previous version), newest first: what a
    policy falls back to when ``checkpoint`` and its previous version are both damaged."""
    folder, own = Path(checkpoint).parent, {Path(checkpoint).name, previous(Path(checkpoint)).name}
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in own]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def set_aside(found: Path, into: Path) -> Path:
    """Move a checkpoint that did not restore into ``into`` (a new name if that one is taken): kept for
    a look, never deleted."""
    into.mkdir(parents=True, exist_ok=True)
    target, n = into / found.name, 1
    while target.exists():
        target, n = into / f"{found.name}.{n}", n + 1
    shutil.move(str(found), str(target))
    return target
