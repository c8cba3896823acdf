"""``RUN/roles.json``: where each role of a distributed run is and how it has fared.

Written by the driver (``launch/supervise.py``); read by people, by tests that inject faults
(a role's PID), and by ``--resume``.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from deepcrl.rundir.checkpoints import write_json_atomic


class RoleBook:
    """``RUN/roles.json``, rewritten atomically on every change: each role's node, PID, restarts,
    last error, status and downtime so far."""

    def __init__(self, path: Path, kinds: dict[str, str]):
        self.path = Path(path)
        self.roles: dict[str, dict] = {}
        for name, kind in kinds.items():
            self.add(name, kind, write=False)
        self.write()

    def add(self, name: str, kind: str, write: bool = True) -> None:
        """A new role (also one that joins a live run)."""
        self.roles[name] = {
            "kind": kind, "status": "starting", "node": None, "pid": None, "restarts": 0,
            "deaths": 0, "stalls": 0, "last_error": None, "downtime_s": 0.0, "down_since": None,
            "progress": None, "last_progress": None, "phase": None,
        }  # fmt: skip
        if write:
            self.write()

    def update(self, name: str, write: bool = True, **fields) -> dict:
        self.roles[name].update(fields)
        if write:
            self.write()
        return self.roles[name]

    def write(self) -> None:
        self.written = time.time()
        write_json_atomic(
            self.path,
            {"driver_pid": os.getpid(), "driver_host": socket.gethostname(), "updated": self.written,
             "roles": self.roles},
            fsync=False,
        )  # fmt: skip
