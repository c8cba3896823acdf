"""The replay seam: the one small interface through which the replay role, the collector's writer and the
learner's sampler reach a replay backend, and the choice between the backends.

Two backends implement it, as modules with the same names and meanings:

- ``reverb`` (``buffer/reverb_replay.py``, ``reverb_writer.py``, ``reverb_sampler.py``): a Reverb server;
  x86-64 Linux and Python <= 3.11 only (its last release, 2023, pins TensorFlow 2.15).
- ``ray`` (``buffer/ray_replay.py``, ``ray_client.py``): a Ray actor holding preallocated numpy tables;
  wherever Ray installs (aarch64 Linux, macOS arm64, today's Python and JAX).

Nothing outside the backends knows which one runs: a role asks ``load(spec.backend)`` for its side.
"""

from __future__ import annotations

import importlib
import importlib.util
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

BACKENDS = ("reverb", "ray")
_MODULES = {
    "reverb": ("deepcrl.buffer.reverb_replay", "deepcrl.buffer.reverb_writer", "deepcrl.buffer.reverb_sampler"),
    "ray": ("deepcrl.buffer.ray_replay", "deepcrl.buffer.ray_client", "deepcrl.buffer.ray_client"),
}
_NEEDS = {"reverb": "reverb", "ray": "ray"}  # the package each backend imports
# The server side of the interface (``Backend`` below): what the replay role calls.
SERVER_FUNCTIONS = (
    "start_server", "start_restored", "restored_state", "restorable", "table_info", "checkpoint",
    "save_checkpoint", "drain_sampler", "reset_table", "latest_checkpoint", "frozen_copy", "server_log",
)  # fmt: skip


class ReplayServer(Protocol):
    """What ``start_server`` returns: where it listens (``port``: None for a backend without one)."""

    port: int | None

    def stop(self) -> None: ...


class SegmentWriter(Protocol):
    """The collector's side: one item per env segment, in every table it is told."""

    segments_written: int

    def write(self, batch: Mapping[str, Any]) -> int: ...

    def flush(self, timeout_s: float | None = None) -> None: ...

    def close(self, timeout_s: float | None = None) -> None: ...

    def set_tables(self, tables: Sequence[str]) -> None: ...


class SegmentSampler(Protocol):
    """The learner's side: batches of whole segments from one table; ``TimeoutError`` when none came."""

    items_sampled: int
    wait_s: float

    def sample(self, timeout_s: float | None = None) -> Any: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """The declared interface (functions of the backend's modules). Addresses are strings each backend
    understands (Reverb: ``host:port``; Ray: the store actor's name)."""

    def start_server(self, spec, port: int | None = None, checkpoint_dir: str | None = None
                     ) -> tuple[ReplayServer, str]: ...  # fmt: skip

    def table_info(self, address: str, timeout_s: int | None = None) -> dict[str, dict[str, Any]]: ...

    def start_restored(self, spec, checkpoint_dir: str, port: int | None = None
                       ) -> tuple[ReplayServer, str, Any]: ...  # fmt: skip

    def restored_state(self, restored: Any) -> dict: ...

    def restorable(self, checkpoint_dir: str) -> list: ...

    def checkpoint(self, address: str, log=None) -> str: ...

    def save_checkpoint(self, address: str, checkpoint_dir: str, state: dict, log=None) -> str: ...

    def drain_sampler(self, address: str, table: str) -> Callable[..., int]:
        """``take(max_items=1, timeout_s=None) -> int``: items taken from ``table`` and dropped."""

    def reset_table(self, address: str, table: str) -> None: ...

    def latest_checkpoint(self, checkpoint_dir: str) -> Any: ...

    def frozen_copy(self, source_dir: str, target_dir: str) -> dict: ...

    def server_log(self, checkpoint_dir: str) -> Any: ...

    SegmentWriter: type
    SegmentSampler: type


def available(name: str) -> bool:
    """Whether the backend's package is installed here (checked without importing it)."""
    return name in _NEEDS and importlib.util.find_spec(_NEEDS[name]) is not None


def default() -> str:
    """Reverb where it installs (the reference), else the Ray backend."""
    return "reverb" if available("reverb") else "ray"


def problem(name: str) -> str | None:
    """Why ``name`` cannot be the backend of a run here (one line), or None."""
    if name not in BACKENDS:
        return f"unknown replay backend {name!r}; valid: {', '.join(BACKENDS)}"
    if not available(name):
        why = {
            "reverb": "dm-reverb installs only on x86-64 Linux with Python <= 3.11 (./setup.sh); use --replay ray",
            "ray": "install the distributed extra (./setup.sh, or ./setup.sh --latest)",
        }[name]
        return f"replay backend {name!r} is not installed here: {why}"
    return None


def load(name: str) -> Backend:
    """The backend's side for a role: server functions, ``SegmentWriter``, ``SegmentSampler`` in one
    namespace. Imported on first use: Reverb brings TensorFlow, and the core install has neither."""
    if name not in BACKENDS:
        raise ValueError(problem(name))
    server, writer, sampler = (importlib.import_module(m) for m in _MODULES[name])
    names = {n: getattr(server, n) for n in SERVER_FUNCTIONS}
    return types.SimpleNamespace(
        name=name, SegmentWriter=writer.SegmentWriter, SegmentSampler=sampler.SegmentSampler, **names
    )
