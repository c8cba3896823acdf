"""The replay on Ray: a store actor that holds every segment once, its tables and their rate limiters.

A second backend beside Reverb (``reverb_replay.py``) with the same functions and meanings, so the roles
can use either behind one seam; it needs neither Reverb nor TensorFlow, and segments travel as numpy
arrays through Ray's object store. The store itself (storage ring, tables, Reverb's rate limiter) is
plain Python in ``replay_store.py``; this module makes it an actor on the caller's node, checkpoints and
restores it, and answers the calls by address that the roles make; the collector's and learners' sides
are in ``ray_client.py``. An address is ``ray:<namespace>/<actor name>``: any process of the same Ray
cluster resolves it; a store started again has a new one.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from deepcrl.buffer.replay_spec import ReplaySpec
from deepcrl.buffer.replay_store import CHECKPOINT, STATE, TABLES, WAIT_S, RateLimiter, Store, one_line
from deepcrl.rundir.checkpoints import (
    check_manifest,
    previous,
    read_json,
    set_aside,
    write_json_atomic,
    write_manifest,
)

MAX_CONCURRENCY = 64  # actor threads: blocked samplers, drains and a writer's calls in flight wait in them
PREFIX = "ray:"

_StoreActor = ray.remote(Store)


class RayReplayServer:
    """What ``start_server`` returns: the store actor; ``port`` is None (Ray needs none)."""

    port = None

    def __init__(self, actor: ray.actor.ActorHandle, address: str):
        self.actor, self.address = actor, address

    def stop(self) -> None:
        """Wake the store's waiting calls, then end the actor (its clients' next calls raise)."""
        try:
            ray.get(self.actor.shutdown.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - dead already, or hung: killed either way
            pass
        ray.kill(self.actor, no_restart=True)


def _launch(spec: ReplaySpec, checkpoint_dir: str | None) -> tuple[RayReplayServer, str]:
    """The store actor on this process's node, named uniquely; its address resolves in every process of
    this Ray cluster (``store_actor``)."""
    if not ray.is_initialized():
        raise RuntimeError("the Ray replay needs Ray: call it from a Ray actor or after ray.init()")
    for t in spec.tables:  # a bad limiter setting fails here, in one line, not in the actor
        RateLimiter.for_table(spec, t)
    ctx = ray.get_runtime_context()
    name = f"deepcrl-replay-{uuid.uuid4().hex[:12]}"
    actor = _StoreActor.options(
        name=name, namespace=ctx.namespace, num_cpus=0, max_concurrency=MAX_CONCURRENCY,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ctx.get_node_id(), soft=False),
    ).remote(spec, checkpoint_dir)  # fmt: skip
    get(actor.describe.remote(), 300)  # up (or its start-up error, raised here)
    address = f"{PREFIX}{ctx.namespace}/{name}"
    _handles[address] = actor
    return RayReplayServer(actor, address), address


def start_server(spec: ReplaySpec, port: int | None = None, checkpoint_dir: str | None = None
                 ) -> tuple[RayReplayServer, str]:  # fmt: skip
    """Start the store; returns it and the address clients use. ``port`` is ignored (no port on Ray).
    With ``checkpoint_dir``, checkpoints go there and the latest one that restores is restored
    (``start_restored``)."""
    if checkpoint_dir is None:
        return _launch(spec, None)
    server, address, _ = start_restored(spec, checkpoint_dir, port)
    return server, address


def start_restored(spec: ReplaySpec, checkpoint_dir: str | Path, port: int | None = None, host: str = "localhost"
                   ) -> tuple[RayReplayServer, str, Path | None]:  # fmt: skip
    """A store restored from the newest checkpoint that restores: ``store``, else ``store.old``, else
    none (empty tables, which refill); a damaged one is moved into ``damaged_dir`` and named in one
    ``warning:`` line. Returns the server, its address and the checkpoint restored. ``port`` and
    ``host`` are ignored (the Reverb version's signature)."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    server, address = _launch(spec, str(root))
    found = restore_first_good(root, lambda p: get(server.actor.restore.remote(str(p)), 600))
    return server, address, found


def restore_first_good(root: Path, restore: Callable[[Path], str | None]) -> Path | None:
    """``restore`` each of ``restorable(root)`` until one restores (``restore`` returns None, or why
    not); the ones that fail are set aside, with one ``warning:`` line. Returns the one restored."""
    tried = []
    for found in restorable(root):
        why = restore(found)
        if why is None:
            if tried:
                print(
                    f"warning: {'; '.join(tried)}; restored the previous one {found}",
                    file=sys.stderr,
                    flush=True,
                )
            return found
        tried.append(
            f"replay checkpoint {found} is damaged ({why}), moved to {set_aside(found, damaged_dir(root))}"
        )
    if tried:
        print(f"warning: {'; '.join(tried)}; none other to restore: the replay starts with empty tables, "
              "which the collector refills", file=sys.stderr, flush=True)  # fmt: skip
    return None


def restorable(checkpoint_dir: str | Path) -> list[Path]:
    """The checkpoints a store started from ``checkpoint_dir`` may restore, in the order it tries them."""
    latest = Path(checkpoint_dir) / CHECKPOINT
    return [p for p in (latest, previous(latest)) if p.is_dir()]


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint a store started from ``checkpoint_dir`` tries first."""
    found = restorable(checkpoint_dir)
    return found[0] if found else None


def damaged_dir(checkpoint_dir: str | Path) -> Path:
    """``CHECKPOINT_DIR.damaged``: checkpoints that did not restore, kept for the user to inspect."""
    return Path(str(checkpoint_dir).rstrip("/") + ".damaged")


def server_log(checkpoint_dir: str | Path) -> Path:
    """``CHECKPOINT_DIR.log``: where ``checkpoint(address, log)`` notes each checkpoint it stored."""
    return Path(str(checkpoint_dir).rstrip("/") + ".log")


# --------------------------------------------------------------------------------------------------------
# Calls by address, from any process of the cluster
# --------------------------------------------------------------------------------------------------------

_handles: dict[str, ray.actor.ActorHandle] = {}


class StoreGone(ConnectionError):
    """The store actor died (or was stopped): a new one has a new address."""


def get(ref: ray.ObjectRef, timeout_s: float | None = None) -> Any:
    """``ray.get`` whose errors say what happened: TimeoutError, or StoreGone when the actor died."""
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise TimeoutError(f"the replay store did not answer within {timeout_s} s") from None
    except ray.exceptions.RayActorError as e:
        raise StoreGone(f"the replay store is gone ({one_line(e)})") from e


def store_actor(address: str, timeout_s: float = 5.0) -> ray.actor.ActorHandle:
    """The store at ``address``. Its name is registered before its address is handed out, so a name not
    found (for a few seconds, ``timeout_s`` at most) means the store is gone: StoreGone."""
    if address in _handles:
        return _handles[address]
    if not address.startswith(PREFIX) or "/" not in address:
        raise ValueError(f"not a Ray replay address: {address!r} (expected {PREFIX}<namespace>/<name>)")
    namespace, name = address[len(PREFIX) :].split("/", 1)
    deadline = time.monotonic() + min(timeout_s, 5.0)
    while True:
        try:
            _handles[address] = ray.get_actor(name, namespace=namespace)
            return _handles[address]
        except ValueError:
            if time.monotonic() > deadline:
                raise StoreGone(
                    f"no Ray replay store at {address} (it stopped, or is of another cluster)"
                ) from None
            time.sleep(0.2)


def connect(address: str, spec: ReplaySpec, tables: Sequence[str], timeout_s: float) -> ray.actor.ActorHandle:
    """The store, checked to have ``tables`` with items shaped as ``spec`` says (bounded wait)."""
    actor = store_actor(address, timeout_s)
    try:
        described = get(actor.describe.remote(), timeout_s)
    except TimeoutError as e:
        raise ConnectionError(f"the Ray replay store at {address} did not answer within {timeout_s} s") from e
    want = {k: tuple(v) for k, v in spec.item_shapes().items()}
    for table in tables:
        if table not in described["tables"]:
            raise KeyError(f"store at {address} has no table {table!r} (has {sorted(described['tables'])})")
    got = {k: tuple(v) for k, v in described["item_shapes"].items()}
    if got != want:
        raise ValueError(f"store at {address} holds items {got}, spec expects {want}")
    return actor


def table_info(address: str, timeout_s: float | None = None) -> dict[str, dict[str, Any]]:
    """Per-table counters, in items: Reverb's fields and meanings (``reverb_replay.table_info``)."""
    return get(store_actor(address).info.remote(), timeout_s)


def checkpoint(address: str, log: Path | None = None) -> str:
    """Have the store write a checkpoint now (into its ``checkpoint_dir``, else a temp dir); returns its
    path. With ``log`` (``server_log``), a line there notes it."""
    path = get(store_actor(address).checkpoint.remote())
    if log is not None:
        with open(log, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} stored checkpoint {path}\n")
    return path


def save_checkpoint(address: str, checkpoint_dir: str | Path, state: dict, log: Path | None = None) -> str:
    """``checkpoint`` with ``state`` (JSON, e.g. the drain counts) inside; the store keeps the previous
    one itself. ``checkpoint_dir`` must be the store's own."""
    path = get(store_actor(address).checkpoint.remote(state))
    if Path(path).parent != Path(checkpoint_dir):
        raise ValueError(f"the store checkpoints to {Path(path).parent}, not {checkpoint_dir}")
    if log is not None:
        with open(log, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} stored checkpoint {path}\n")
    return path


def restored_state(found: Path | None) -> dict:
    """The ``state`` saved with a checkpoint; {} for none."""
    return (read_json(found / STATE) or {}) if found is not None else {}


def reset_table(address: str, table: str) -> None:
    """Empty ``table``: its items and its rate limiter's counts (a detached learner's table, freed)."""
    get(store_actor(address).reset.remote(table))


DRAIN_AHEAD = 64  # items a drain takes per call to the store (Reverb's drain keeps 8 in flight)


def drain_sampler(address: str, table: str) -> Callable[..., int]:
    """A call ``take(max_items=1, timeout_s=None) -> int`` that takes up to ``max_items`` items from
    ``table`` and drops them (no data is sent), blocking while the limiter holds every one back:
    ``take()`` blocks until one is taken, as Reverb's drain does; with ``timeout_s`` it returns 0 when
    none came, so a drain loop can stop. It asks the store for at least ``DRAIN_AHEAD`` items at a time
    and hands them out over the next calls: those taken ahead count as sampled, as Reverb's items in
    flight do. StoreGone when the store died."""
    actor, ahead = store_actor(address), [0]

    def take(max_items: int = 1, timeout_s: float | None = None) -> int:
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        while not ahead[0]:
            wait = max(0.0, min(WAIT_S, deadline - time.monotonic()))
            ahead[0] = get(actor.drain.remote(table, max(max_items, DRAIN_AHEAD), wait))
            if not ahead[0] and time.monotonic() >= deadline:
                return 0
        got = min(max_items, ahead[0])
        ahead[0] -= got
        return got

    return take


def frozen_copy(source_dir: str | Path, target_dir: str | Path) -> dict[str, dict[str, int]]:
    """Copy the latest checkpoint of ``source_dir`` that passes its manifest into ``target_dir`` with
    every table's rate limiter lifted (only the min size remains), so a store restored from it serves
    its fixed data for as long as it is sampled (a restored table keeps its checkpointed limiter, as in
    Reverb). Returns per table the inserts and samples it had counted; FileNotFoundError without one."""
    source = next((c for c in restorable(source_dir) if _manifest_ok(c)), None)
    if source is None:
        raise FileNotFoundError(f"no complete Ray replay checkpoint in {source_dir}")
    target = Path(target_dir) / CHECKPOINT
    shutil.copytree(source, target)
    meta, out = json.loads((source / TABLES).read_text()), {}
    for name, table in meta["tables"].items():
        lim = table["limiter"]
        lim.update(samples_per_insert=1.0, min_diff=-sys.float_info.max, max_diff=sys.float_info.max)
        out[name] = {"inserts": int(lim["inserts"]), "samples": int(lim["samples"])}
    write_json_atomic(target / TABLES, meta, fsync=False)
    write_json_atomic(target / STATE, {}, fsync=False)  # the source's drain counts are not the copy's
    write_manifest(target)
    return out


def _manifest_ok(folder: Path) -> bool:
    try:
        check_manifest(folder)
    except ValueError:
        return False
    return True
