"""``RUN/roles.json``: where each role of a distributed run is and how it has fared.

Written by the driver (``launch/supervise.py``); read by people, by tests that inject faults
(a role's PID), and by ``--resume``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from deepcrl.rundir.checkpoints import write_json_atomic


class RoleBook:
    """``RUN/roles.json``, rewritten atomically on every change: each role's node, PID, restarts,
    last error, status and downtime so far."""

    def __init__(self, path: Path, kinds: dict[str, str]):
        self.path = Path(path)
        self.roles = {
            name: {
                "kind": kind, "status": "starting", "node": None, "pid": None, "restarts": 0,
                "deaths": 0, "stalls": 0, "last_error": None, "downtime_s": 0.0, "down_since": None,
                "progress": None, "last_progress": None, "phase": None,
            }
            for name, kind in kinds.items()
        }  # fmt: skip
        self.write()

    def update(self, name: str, write: bool = True, **fields) -> dict:
        self.roles[name].update(fields)
        if write:
            self.write()
        return self.roles[name]

    def write(self) -> None:
        write_json_atomic(
            self.path, {"driver_pid": os.getpid(), "updated": time.time(), "roles": self.roles}, fsync=False
        )
