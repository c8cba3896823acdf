"""The replay role: the replay service of a distributed run; its address goes to the collector and learners.

A plain class implementing ``roles/contract.ReplayRole`` (``launch/ray_roles.py`` makes it a Ray actor);
it reaches its backend (a Reverb server, or the Ray store) only through ``buffer/replay_backend.py``, so
it does not know which one runs. Restarted on the port it had (Reverb), it restores its latest
checkpoint (in ``RUN/replay/``; the previous one is kept in ``RUN/replay.previous/`` and
restored, with one ``warning:`` line, when the latest is damaged) and the clients' gRPC channels
reconnect by themselves.
``drain(table)`` samples and discards from a table whose learner is down, so the table's rate limiter
keeps admitting the collector's inserts.
"""

from __future__ import annotations

import os
import socket
import threading

from deepcrl.buffer import replay_backend
from deepcrl.buffer.replay_spec import ReplaySpec
from deepcrl.roles.contract import RoleBase


class ReplayService(RoleBase):
    name = "replay"

    def __init__(self, spec: ReplaySpec, checkpoint_dir: str | None, port: int | None = None,
                 seed_from: str | None = None):  # fmt: skip
        """``seed_from``: a finished run's replay folder; its latest checkpoint is copied, rate limits
        lifted, into ``checkpoint_dir`` (unless that holds one already: a restart) and served as
        fixed data (``learners_from_replay``)."""
        super().__init__()  # liveness: inserts + samples served, read from its own server
        self.spec = spec
        self.backend = backend = replay_backend.load(spec.backend)
        self.checkpoint_dir = checkpoint_dir
        if seed_from and checkpoint_dir and not backend.restorable(checkpoint_dir):
            backend.frozen_copy(seed_from, checkpoint_dir)
        self._log = backend.server_log(checkpoint_dir) if checkpoint_dir else None
        restored = None
        if checkpoint_dir is None:
            self.server, self._local_address = backend.start_server(spec, port=port)
        else:  # the latest checkpoint that restores (a damaged one: one warning line), or empty tables
            self.server, self._local_address, restored = backend.start_restored(
                spec, checkpoint_dir, port
            )
        self._stopped = threading.Event()
        self._drains: dict[str, threading.Event] = {}
        self._checkpointing = threading.Lock()
        # Samples discarded per table while its learner was down (summary.json: drained_while_down),
        # kept with each checkpoint: they continue from the one restored.
        self.drained: dict[str, int] = dict(backend.restored_state(restored).get("drained", {}))
        self.liveness.beat()  # the server is up, so it is running

    def ready(self) -> dict:
        """Where it listens (the node's address is the host's business: ``launch/ray_roles.whoami``) and
        the items its tables hold (restored from a checkpoint, or none)."""
        tables = self.backend.table_info(self._local_address, timeout_s=60)
        items = sum(t["size"] for t in tables.values())
        port = self.server.port  # Reverb listens on a port of this node; the Ray store has an address of its own
        where = {"port": port} if port is not None else {"port": None, "address": self._local_address}
        return {"pid": os.getpid(), "node": socket.gethostname(), **where, "items": items}

    def run(self) -> None:
        """Blocks until ``stop``: the driver learns of this role's death when the call fails."""
        self._stopped.wait()

    def info(self) -> dict[str, dict]:
        return self.backend.table_info(self._local_address)

    def checkpoint(self) -> str:
        """Reverb's checkpoint, with the drain counts and a manifest in it; the one it replaces is kept
        beside the folder (``backend.save_checkpoint``). One at a time (the driver's periodic
        ones and the final one may cross)."""
        with self._checkpointing, self.liveness.waiting("its own checkpoint"):  # a large table takes a while
            if self.checkpoint_dir is None:
                return self.backend.checkpoint(self._local_address, self._log)
            state = {"drained": self.drained_counts()}
            return self.backend.save_checkpoint(self._local_address, self.checkpoint_dir, state, self._log)

    def progress(self) -> dict:
        """Inserts and samples served by every table; a server that does not answer is not alive."""
        try:
            tables = self.backend.table_info(self._local_address, timeout_s=5)
        except Exception:  # silent since the last answer: the watchdog decides
            return self.liveness.report()
        self.liveness.observe(sum(t["num_inserts"] + t["num_samples"] for t in tables.values()))
        return self.liveness.report()

    def drain(self, table: str) -> None:
        """Start sampling-and-discarding ``table`` (its learner is down)."""
        if table in self._drains and not self._drains[table].is_set():
            return
        stop = self._drains[table] = threading.Event()
        take = self.backend.drain_sampler(self._local_address, table)

        def loop() -> None:
            while not stop.is_set():
                taken = take(1024, 1.0)  # blocks while the rate limiter holds it back (Reverb: one, no timeout)
                self.drained[table] = self.drained.get(table, 0) + taken

        threading.Thread(target=loop, name=f"drain-{table}", daemon=True).start()

    def drained_counts(self) -> dict[str, int]:
        return dict(self.drained)

    def stop_drain(self, table: str) -> None:
        """Stop draining ``table`` (its learner samples again); a blocked drain takes one more item."""
        if table in self._drains:
            self._drains[table].set()

    def reset(self, table: str) -> None:
        """Empty ``table`` (its learner left): it holds nothing back and is free for the next one."""
        self.stop_drain(table)
        self.backend.reset_table(self._local_address, table)

    def stop(self) -> None:
        for ev in self._drains.values():
            ev.set()
        self._stopped.set()
        self.server.stop()
