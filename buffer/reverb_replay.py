"""Reverb replay service of the distributed mode: server, tables, segment writer and sampler.

Data contract with the collector and the learners: a *segment batch* is a dict of numpy arrays with a
leading env axis N and a time axis L (the collector's unroll length):

    state       float32 [N, L, state_size]
    action      float32 [N, L, action_size]
    episode_id  int32   [N, L]   per-env episode counter; relabeling never crosses ids

One Reverb item is one env's segment of L steps. It is stored as a single cell (the whole [L, ...]
slices of that env) in a chunk of its own, so that one item == one chunk: a sample transfers exactly the
bytes of one segment, and FIFO eviction frees whole chunks. Every table (one per learner) gets an item that
references the *same* chunk, so the data is sent and stored once whatever the number of learners.

A learner samples `batch_size` items and receives the same dict with a leading axis [B, L, ...].

This module holds the contract (specs, tables), the server, its counters and drain; the collector's side is
`reverb_writer.py` and the learner's side `reverb_sampler.py`. Only this package imports Reverb (and
with it TensorFlow); nothing else in the project needs TensorFlow.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import reverb
import tensorflow as tf
from reverb import pybind as reverb_pybind

from deepcrl.buffer.replay_spec import DTYPES, FIELDS, ReplaySpec, TableSpec, make_spec  # noqa: F401  (the contract, re-exported)
from deepcrl.rundir.checkpoints import check_manifest, read_json, set_aside, write_json_atomic, write_manifest

# FIELDS (replay_spec.py) is the field order of the flattened item columns: dm-tree flattens dicts in
# sorted key order, so the writer's `create_item(trajectory=dict)` lays the columns out in this order;
# the sampler relies on it.
# Leading entries of a pybind sampler row before the data columns: key, probability, table_size,
# priority, times_sampled.
NUM_INFO = 5


# --------------------------------------------------------------------------------------------------------
# Rate limiters and tables (the specs themselves: replay_spec.py)
# --------------------------------------------------------------------------------------------------------


def _rate_limiter(spec: ReplaySpec, table: TableSpec) -> reverb.rate_limiters.RateLimiter:
    min_size = spec.min_size_items
    spi = table.samples_per_insert
    if spi is None:
        return reverb.rate_limiters.MinSize(min_size)
    error_buffer = table.error_buffer
    if error_buffer is None:
        error_buffer = max(0.1 * spi * min_size, 2.0 * max(1.0, spi))
    return reverb.rate_limiters.SampleToInsertRatio(
        samples_per_insert=spi, min_size_to_sample=min_size, error_buffer=error_buffer
    )


def _signature(spec: ReplaySpec) -> dict[str, tf.TensorSpec]:
    shapes = spec.item_shapes()
    return {k: tf.TensorSpec(shapes[k], tf.as_dtype(DTYPES[k]), name=k) for k in FIELDS}


def make_tables(spec: ReplaySpec) -> list[reverb.Table]:
    """Uniform sampling, FIFO eviction, unlimited re-sampling, a signature so writers validate items."""
    return [
        reverb.Table(
            name=t.name,
            sampler=reverb.selectors.Uniform(),
            remover=reverb.selectors.Fifo(),
            max_size=spec.capacity_items,
            rate_limiter=_rate_limiter(spec, t),
            max_times_sampled=0,
            signature=_signature(spec),
        )
        for t in spec.tables
    ]


# --------------------------------------------------------------------------------------------------------
# Server, info, checkpoints
# --------------------------------------------------------------------------------------------------------


def start_server(
    spec: ReplaySpec,
    port: int | None = None,
    checkpoint_dir: str | None = None,
    host: str = "localhost",
) -> tuple[reverb.Server, str]:
    """Start a Reverb server in this process; returns it and the address clients connect to.

    With `checkpoint_dir`, checkpoints go there and a server started again from the same directory
    restores the latest one that restores (``start_restored``). The server listens on all interfaces;
    `host` only shapes the returned address (give the node's IP when learners run on other machines).
    """
    if checkpoint_dir is None:
        server = reverb.Server(tables=make_tables(spec), port=port)
        return server, f"{host}:{server.port}"
    server, address, _ = start_restored(spec, checkpoint_dir, port, host)
    return server, address


def _server(
    spec: ReplaySpec, port: int | None, checkpoint_dir: str | Path, fallback: Path | None
) -> reverb.Server:
    """A server checkpointing to ``checkpoint_dir``; it restores that folder's newest complete checkpoint,
    or ``fallback`` when the folder holds none."""
    checkpointer = reverb.checkpointers.DefaultCheckpointer(
        path=str(checkpoint_dir), fallback_checkpoint_path=str(fallback) if fallback else None
    )
    # Reverb's C++ start-up notes (checkpointer, restore, port) go to CHECKPOINT_DIR.log, not to the
    # run's console; a failure still raises here with its message. Not inside the checkpoint folder:
    # Reverb takes any entry there for a checkpoint, and a file named after the real ones hides them.
    with _stderr_to(server_log(checkpoint_dir)):
        return reverb.Server(tables=make_tables(spec), port=port, checkpointer=checkpointer)


def start_restored(
    spec: ReplaySpec, checkpoint_dir: str | Path, port: int | None = None, host: str = "localhost"
) -> tuple[reverb.Server, str, Path | None]:
    """A server restored from the newest checkpoint that restores: ``checkpoint_dir``'s own, else the
    previous one kept beside it (``previous_dir``), else none (empty tables, which refill).

    A checkpoint whose files differ from its manifest, or that Reverb fails to read, is moved into
    ``damaged_dir`` (never deleted) and named in one ``warning:`` line, as the roles' checkpoints are
    (``rundir/checkpoints.py``). Returns the server, its address and the checkpoint it restored.
    """
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    tried: list[str] = []
    for found in restorable(root):
        why = _differs_from_manifest(found)  # checked before Reverb reads: a chunk it misses aborts
        if why is None:
            try:
                server = _server(spec, port, root, None if found.parent == root else found)
            except Exception as e:  # noqa: BLE001 - a damaged checkpoint fails in many ways
                if _restores(spec, found):
                    raise  # the checkpoint is fine: the server failed for another reason (its port)
                why = _one_line(e)
        if why is not None:
            moved = set_aside(found, damaged_dir(root))
            tried.append(f"replay checkpoint {found} is damaged ({why}), moved to {moved}")
            continue
        if tried:
            print(
                f"warning: {'; '.join(tried)}; restored the previous one {found}", file=sys.stderr, flush=True
            )
        return server, f"{host}:{server.port}", found
    server = _server(spec, port, root, None)
    if tried:
        print(f"warning: {'; '.join(tried)}; none other to restore: the replay starts with empty tables, "
              "which the collector refills", file=sys.stderr, flush=True)  # fmt: skip
    return server, f"{host}:{server.port}", None


def _restores(spec: ReplaySpec, found: Path) -> bool:
    """Whether a server on any port restores ``found`` (told apart from a server that failed to start)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _server(spec, None, Path(tmp) / "probe", found).stop()  # its notes to tmp/probe.log
        except Exception:  # noqa: BLE001
            return False
    return True


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 160 else text[:157] + "..."


def server_log(checkpoint_dir: str | Path) -> Path:
    """Where the C++ notes of a server checkpointing to ``checkpoint_dir`` go: ``CHECKPOINT_DIR.log``."""
    return Path(str(checkpoint_dir).rstrip("/") + ".log")


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """This process's file descriptor 2 (C++ code writes there directly) appended to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def table_info(address: str, timeout_s: int | None = None) -> dict[str, dict[str, Any]]:
    """Per-table counters from the server, in items (segments).

    num_inserts / num_samples are the rate limiter's completed calls since the table was created (they
    survive checkpoint restore); they include evicted items and samples a sampler prefetched.
    """
    infos = reverb.Client(address).server_info(timeout=timeout_s)
    out: dict[str, dict[str, Any]] = {}
    for name, info in infos.items():
        rl = info.rate_limiter_info
        out[name] = {
            "size": int(info.current_size),
            "max_size": int(info.max_size),
            "num_inserts": int(rl.insert_stats.completed),
            "num_samples": int(rl.sample_stats.completed),
            "num_unique_samples": int(info.num_unique_samples),
            "num_episodes": int(info.num_episodes),
            "num_deleted_episodes": int(info.num_deleted_episodes),
            "samples_per_insert": float(rl.samples_per_insert),
            "min_size_to_sample": int(rl.min_size_to_sample),
            "min_diff": float(rl.min_diff),
            "max_diff": float(rl.max_diff),
        }
    return out


def checkpoint(address: str, log: Path | None = None) -> str:
    """Ask the server to write a checkpoint now; returns its path.

    Goes to the server's `checkpoint_dir` (or a temp dir when it was started without one). Blocks the
    tables while writing, so call it rarely (e.g. next to the learners' own checkpoints). Called in the
    server's own process with its ``log`` (``server_log``), Reverb's "Stored checkpoint" note goes there.
    Reverb deletes every older checkpoint of the folder; ``save_checkpoint`` keeps the previous one.
    """
    if log is None:
        return reverb.Client(address).checkpoint()
    with _stderr_to(log):
        return reverb.Client(address).checkpoint()


STATE = "deepcrl_state.json"  # inside a checkpoint: what the replay role keeps with it (its drain counts)


def save_checkpoint(address: str, checkpoint_dir: str | Path, state: dict, log: Path | None = None) -> str:
    """``checkpoint``, keeping the one it replaces in ``previous_dir`` (hard links: no data copied), with
    ``state`` (JSON) and a manifest of the files' sizes and CRC32s written into it. Called in the
    server's process, one call at a time; returns the new checkpoint's path."""
    root = Path(checkpoint_dir)
    latest = latest_checkpoint(root)
    if latest is not None:
        _keep_as_previous(latest, previous_dir(root))
    path = Path(checkpoint(address, log))
    write_json_atomic(path / STATE, state, fsync=False)  # a kill before the manifest: passes unchecked
    write_manifest(path)
    return str(path)


def restored_state(found: Path | None) -> dict:
    """The ``state`` saved with a checkpoint (``save_checkpoint``); {} for none or one saved without."""
    return (read_json(found / STATE) or {}) if found is not None else {}


def previous_dir(checkpoint_dir: str | Path) -> Path:
    """``CHECKPOINT_DIR.previous``: the checkpoint before the latest. Beside the folder, not in it: Reverb
    deletes all but the newest entry of its folder at every checkpoint."""
    return Path(str(checkpoint_dir).rstrip("/") + ".previous")


def damaged_dir(checkpoint_dir: str | Path) -> Path:
    """``CHECKPOINT_DIR.damaged``: checkpoints that did not restore, moved aside for the user to inspect."""
    return Path(str(checkpoint_dir).rstrip("/") + ".damaged")


def _complete(folder: Path) -> list[Path]:
    return sorted(d for d in folder.glob("*") if not d.name.startswith(".") and (d / "DONE").is_file())


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint a server started from ``checkpoint_dir`` tries first: the newest complete one."""
    done = _complete(Path(checkpoint_dir))
    return done[-1] if done else None


def restorable(checkpoint_dir: str | Path) -> list[Path]:
    """The complete checkpoints a server started from ``checkpoint_dir`` may restore, in the order it
    tries them: the folder's own, newest first, then the previous one kept beside it."""
    root = Path(checkpoint_dir)
    return [*reversed(_complete(root)), *reversed(_complete(previous_dir(root)))]


def _keep_as_previous(latest: Path, kept: Path) -> None:
    """Hard-link ``latest`` into ``kept`` (copies where links fail), then drop what ``kept`` held before."""
    if (kept / latest.name / "DONE").is_file():
        return
    tmp = kept / f".{latest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(latest, tmp, copy_function=_link_or_copy)
    os.rename(tmp, kept / latest.name)
    for old in kept.iterdir():
        if old.name != latest.name:
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def frozen_copy(source_dir: str | Path, target_dir: str | Path) -> dict[str, dict[str, int]]:
    """Copy the latest checkpoint in ``source_dir`` that passes its manifest to ``target_dir`` with every
    table's rate limiter lifted, so a server restored from the copy serves its fixed data for as long
    as it is sampled.

    A restored table keeps its checkpointed limiter (the server's own table definitions only name
    the tables), and a sample-to-insert ratio admits no samples once inserts stop; the copy's limiters
    only wait for ``min_size_to_sample``. Edits Reverb's own checkpoint records (``tables.tfrecord``,
    the ``PriorityTableCheckpoint`` protos it ships); items and chunks are copied as they are. Returns
    per table the inserts and samples it had counted. ``FileNotFoundError`` without a checkpoint.
    """
    from reverb.cc.checkpointing import checkpoint_pb2

    source = next((c for c in restorable(source_dir) if _differs_from_manifest(c) is None), None)
    if source is None:
        raise FileNotFoundError(f"no complete Reverb checkpoint in {source_dir}")
    target = Path(target_dir) / source.name
    shutil.copytree(source, target)
    tables, out = [], {}
    for record in tf.data.TFRecordDataset(str(source / "tables.tfrecord"), compression_type="ZLIB"):
        table = checkpoint_pb2.PriorityTableCheckpoint.FromString(record.numpy())
        limiter = table.rate_limiter
        limiter.samples_per_insert, limiter.min_diff, limiter.max_diff = 1.0, -sys.float_info.max, sys.float_info.max
        out[table.table_name] = {"inserts": int(limiter.insert_count), "samples": int(limiter.sample_count)}
        tables.append(table)
    with tf.io.TFRecordWriter(str(target / "tables.tfrecord"), options="ZLIB") as writer:
        for table in tables:
            writer.write(table.SerializeToString())
    write_json_atomic(target / STATE, {}, fsync=False)  # the source's drain counts are not the copy's
    write_manifest(target)
    return out


def _differs_from_manifest(folder: Path) -> str | None:
    """How ``folder``'s files differ from its manifest (a file missing, short, its CRC32); None: they don't."""
    try:
        check_manifest(folder)
    except ValueError as e:
        return str(e)
    return None


def reset_table(address: str, table: str) -> None:
    """Empty ``table`` (its items and its rate limiter's counts): a detached learner's table, freed."""
    reverb.Client(address).reset(table)


def drain_sampler(address: str, table: str) -> Callable[..., int]:
    """A call ``take(max_items=1, timeout_s=None) -> int`` (the seam's, buffer/replay_backend.py) that
    takes an item from `table` and drops it, blocking while the table's rate limiter holds it back: the
    replay role drains the table of a learner that is down, so the collector is never stalled. Reverb's
    sampler takes one item per call and cannot time out, so it returns 1 once an item came."""
    next_item = reverb_pybind.Client(address).NewSampler(table, -1, 8).GetNextTrajectory

    def take(max_items: int = 1, timeout_s: float | None = None) -> int:
        next_item()
        return 1

    return take


def connect(address: str, spec: ReplaySpec, tables: Sequence[str], timeout_s: float) -> reverb.Client:
    """Reach the server (bounded wait) and check it has `tables` with items shaped as `spec` says.

    Without this, a Reverb writer or sampler pointed at a dead address blocks forever in its constructor.
    """
    client = reverb.Client(address)
    try:
        infos = client.server_info(timeout=max(1, math.ceil(timeout_s)))
    except reverb.DeadlineExceededError as e:
        raise ConnectionError(f"no Reverb server answered at {address} within {timeout_s} s") from e
    want = spec.item_shapes()
    for table in tables:
        if table not in infos:
            raise KeyError(f"server at {address} has no table {table!r} (has {sorted(infos)})")
        sig = infos[table].signature
        if sig is not None:
            got = {k: tuple(v.shape) for k, v in sig.items()}
            if got != want:
                raise ValueError(f"table {table!r} holds items {got}, spec expects {want}")
    return client
