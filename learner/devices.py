"""One program over several devices: a 1-D mesh and which axis of each array is split over it.

One code path for any device count (with N = 1 the mesh holds one device and every split is trivial):

- **Data-parallel updates.** Parameters and optimizer state are replicated; a minibatch is split along
  its batch axis. The update is the global program (``jit`` with ``NamedSharding``): XLA's partitioner
  gathers ψ(g) of the whole global batch where ``energy_matrix`` needs it, so every positive is scored
  against the other B − 1 goals of the global batch (not the B/N − 1 of its device), and it reduces the
  gradients across devices. The loss and gradients are those of one device holding the whole batch.
- **Envs and the on-device replay** (``single``) are split along the env axis; each device samples its
  share of the segments from its own shard (``per_device``: no buffer crosses devices).
- **Seeds** (``num_seeds`` K > 1) are split along the seed axis: K/N seeds per device, no collective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "devices"

try:  # today's JAX
    from jax import shard_map as _shard_map

    _CHECK = {"check_vma": False}
except ImportError:  # the pinned lane's JAX (0.4.x)
    from jax.experimental.shard_map import shard_map as _shard_map

    _CHECK = {"check_rep": False}


def count(requested: int | str, available: int | None = None, name: str = "num_devices") -> int:
    """The device count a run asked for (0 or ``"all"``: every local device); ``ValueError`` when unusable."""
    available = jax.local_device_count() if available is None else available
    if str(requested).strip().lower() in ("all", "0"):
        return available
    try:
        n = int(requested)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive whole number or all (0), got {requested!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be >= 1 (or all, 0), got {n}")
    if n > available:
        raise ValueError(f"{name}={n} but this host has {available} {jax.default_backend()} device(s)")
    return n


def make_mesh(num_devices: int) -> Mesh:
    """A 1-D mesh of the first ``num_devices`` local devices."""
    return Mesh(np.asarray(jax.local_devices()[:num_devices]), (AXIS,))


def spec(axis: int | None) -> P:
    """Split along ``axis`` (None: replicated)."""
    return P() if axis is None else P(*([None] * axis), AXIS)


def sharding(mesh: Mesh, axis: int | None) -> NamedSharding:
    return NamedSharding(mesh, spec(axis))


def tree_shardings(mesh: Mesh, tree: Any, axis: int | None, size: int | None = None) -> Any:
    """A sharding per leaf: split along ``axis`` where the leaf has that axis (of length ``size``, when
    given), replicated otherwise (scalars, counters, keys)."""

    def one(x):
        shape = np.shape(x)
        splits = axis is not None and len(shape) > axis and (size is None or shape[axis] == size)
        return sharding(mesh, axis if splits else None)

    return jax.tree_util.tree_map(one, tree)


def put(tree: Any, shardings: Any) -> Any:
    """Place ``tree`` on the mesh as ``shardings`` says."""
    return jax.device_put(tree, shardings)


def per_device(fn: Callable, mesh: Mesh, in_specs: Any, out_specs: Any) -> Callable:
    """``fn`` run on each device's own shards (``shard_map``); inside, ``device_index()`` says which."""
    return _shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **_CHECK)


def device_index() -> jax.Array:
    """Inside ``per_device``: this device's position on the mesh."""
    return jax.lax.axis_index(AXIS)


def device_key(key: jax.Array, num_devices: int) -> jax.Array:
    """Inside ``per_device``: an independent key per device; with one device the key itself, so a
    one-device run draws exactly what it drew before devices were split."""
    return key if num_devices == 1 else jax.random.fold_in(key, device_index())
