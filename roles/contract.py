"""The one contract between the supervisor and the roles it runs (collector, learners, replay).

The supervisor (``launch/supervise.py``) relies on nothing else: every remote call it makes is a
method declared here. ``Role`` is what every role does; ``LearnerRole``, ``CollectorRole`` and
``ReplayRole`` add the calls only that kind answers; ``Hosted`` is what ``launch/ray_roles.py`` adds
around every role on its Ray actor (a role knows nothing of Ray). ``RoleBase`` holds what the roles
share: the liveness the watchdog reads (``progress``), the move to a new replay address
(``reconnect``), and the restore rule with its metrics cursor. ``tests/test_layers.py`` checks the
role classes against these protocols and the supervisor's remote calls against this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from deepcrl.rundir.checkpoints import CheckpointError, resolve
from deepcrl.rundir.liveness import Liveness
from deepcrl.rundir.metrics import read_metrics, truncate_metrics

# (version the caller holds) -> (learner update count, actor params or None if unchanged)
FetchParams = Callable[[int], tuple[int, object | None]]


class Role(Protocol):
    """What every role does, in the order the supervisor uses it. A role is built (and restored
    from its checkpoint when resumed) by its constructor, which ``Hosted.start`` runs."""

    def ready(self) -> dict:
        """Its facts once built: PID, node, and the count it starts from (a learner's ``updates``,
        the collector's ``env_steps``, the replay's ``items``, with its ``port``)."""

    def run(self) -> object:
        """Its loop, until its work is done or ``stop``; returns its result. The call failing is how
        the supervisor learns that the role died."""

    def stop(self) -> None:
        """End ``run`` soon; a final checkpoint is kept."""

    def progress(self) -> dict:
        """Its ``Liveness.report()``: the watchdog's only input (``rundir/liveness.py``)."""

    def checkpoint(self) -> str:
        """Have a checkpoint written that a restart continues from (the replay writes one at once, a
        learner at its next round, the collector has one after every collection step); its path."""

    def reconnect(self, address: str) -> None:
        """Use the replay at ``address`` from now on (it came back on another port). The replay
        itself never gets one: it is the address."""


class LearnerRole(Role, Protocol):
    def run(self, eval_every_rounds: int | None = None) -> dict:
        """Train until ``stop``, evaluating every ``eval_every_rounds`` rounds (default: per epoch)."""

    def stop(self, use_up_quota: bool = False) -> None:
        """With ``use_up_quota`` (the collector finished): first the updates the rate limiter grants."""

    def get_actor_params(self, have_version: int = -1) -> tuple[int, object | None]:
        """(update count, actor parameters), or (count, None) if the caller has them already."""

    def set_env_steps_offset(self, offset: int, joined_at: int | None = None) -> None:
        """The collector's env steps minus its table's inserts (in steps): where rows sit; for a
        learner attached to a live run, also the collector's env steps when its data began."""


class CollectorRole(Role, Protocol):
    def set_fetch(self, fetch_params: FetchParams) -> None:
        """Take parameters from a new driving learner (it was restarted)."""

    def set_tables(self, tables: list[str]) -> int:
        """Write to these tables from the next collection step on (a learner attached or detached);
        the env steps collected before the switch."""


class ReplayRole(Role, Protocol):
    def info(self) -> dict[str, dict]:
        """Per-table counters (``buffer/reverb_replay.table_info``)."""

    def drain(self, table: str) -> None:
        """Sample and discard from ``table`` while its learner is down."""

    def stop_drain(self, table: str) -> None:
        """Its learner samples again."""

    def drained_counts(self) -> dict[str, int]:
        """Items discarded per table on behalf of a learner that was down."""

    def reset(self, table: str) -> None:
        """Empty ``table``: its learner was detached."""


class Hosted(Protocol):
    """What ``launch/ray_roles.named_role`` adds to a role on its Ray actor: a start in two steps."""

    def whoami(self) -> dict:
        """PID, node, Ray node id, GPUs: answered at once, even while ``start`` builds the role."""

    def start(self) -> dict:
        """Build the role (its constructor); ``ready()``'s facts and the devices it sees."""


class RoleBase:
    """What the roles share: liveness (``progress``), ``reconnect``, and the restore rule.

    Restoring (a restart, ``run.py --resume``): a role whose checkpoint is found restores it and
    drops the metric rows written after it (its metrics cursor), so its metrics continue without
    duplicates; one without a checkpoint starts over with empty metrics, unless they show progress
    a checkpoint should have kept: then ``CheckpointError`` (one line), never a silent fresh start.
    """

    name: str  # its name, and its folder of the run directory (``dir``)
    dir: Path
    resumed = False

    def __init__(self) -> None:
        self.liveness = Liveness()  # its loop's work count; a restored role sets where it continues
        self._new_address: str | None = None

    def progress(self) -> dict:
        return self.liveness.report()

    def reconnect(self, address: str) -> None:
        self._new_address = address

    def _moved_to(self) -> str | None:
        """The replay's new address, once, if ``reconnect`` gave one since the last call."""
        address, self._new_address = self._new_address, None
        return address

    def _found(self, path: Path, what: str, unit: str, expected: bool = True) -> bool:
        """Whether a checkpoint at ``path`` (or its ``.old``) is there to restore. Without one the
        role starts over, unless its metrics show progress past the untrained policy's first row
        that an ``expected`` checkpoint should have kept (``unit`` names the count in the error)."""
        if resolve(path) is not None:
            return True
        rows = read_metrics(self.dir / "metrics.jsonl")
        if len(rows) > 1 and expected:
            raise CheckpointError(
                f"{self.name} has {len(rows)} metric rows (up to {rows[-1].get(unit)} "
                f"{unit.replace('_', ' ')}) but no {what} at {path} (nor .old); not starting it over"
            )
        self._start_over()
        return False

    def _start_over(self) -> None:
        truncate_metrics(self.dir, keep=lambda row: False)

    def _rows_kept(self, keep: Callable[[dict], bool]) -> list[dict]:
        """After a restore: keep the metric rows ``keep`` says the checkpoint had written (the
        metrics cursor), drop the later ones; the rows kept."""
        truncate_metrics(self.dir, keep=keep)
        self.resumed = True
        return read_metrics(self.dir / "metrics.jsonl")
