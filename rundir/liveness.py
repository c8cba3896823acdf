"""What a role tells its driver about its own progress: the liveness watchdog's only input.

A role (collector, learner, replay) owns one ``Liveness``. Its loop calls
``advance(n)`` when it did work (env steps written, updates made, items served)
and ``beat()`` when it finished a bounded wait for another role (a sample that
timed out because the table is empty or rate-limited). Inside ``waiting(on)``
(a put blocked by the replay, a parameter fetch from the learner) the role
counts as alive: it is the victim of another role, not the stalled one. The
driver polls ``report()`` through a cheap remote call; a role whose loop has
not beaten for its limit, or that does not answer at all (SIGSTOP, a wedged
driver call), is stalled.

The adaptive limit: a role measures the longest pause between two beats of its
own loop (an evaluation, a checkpoint, a round of updates at depth 1024, the
first compile included), and the driver allows ``STALL_FACTOR`` times that, at
least ``STALL_FLOOR_S``, unless ``role_stall_timeout_s`` fixes the limit.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

STALL_FACTOR = 5.0  # × the longest pause a role has shown: no legitimate pause reaches it
STALL_FLOOR_S = 120.0  # the adaptive limit is never below this


def stall_limit_s(fixed_s: float, longest_pause_s: float) -> float:
    """The silence after which a running role counts as stalled (``fixed_s`` > 0 overrides)."""
    if fixed_s > 0:
        return float(fixed_s)
    return max(STALL_FLOOR_S, STALL_FACTOR * float(longest_pause_s))


class Liveness:
    """A role's work count and the last moment its loop was alive (thread-safe, O(1) per call)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0  # a restored role sets where it continues (updates, env steps) before its loop
        self.phase = "starting"  # until the first beat of the role's loop (first compile included)
        self._beat = time.monotonic()
        self._longest_pause = 0.0
        self._waiting: dict[int, str] = {}  # thread id -> what it waits for

    def beat(self, worked: bool = False) -> None:
        """The loop is alive. The phase stays ``starting`` until the first work is done: until then
        (first compiles included) the driver holds the role to ``role_start_timeout_s``."""
        with self._lock:
            now = time.monotonic()
            if self.phase != "starting":
                self._longest_pause = max(self._longest_pause, now - self._beat)
            self._beat = now
            if worked:
                self.phase = "running"

    def advance(self, n: int = 1) -> None:
        """``n`` units of work done (and the loop is alive)."""
        with self._lock:
            self.count += int(n)
        self.beat(worked=True)

    def observe(self, count: int) -> None:
        """A count read from elsewhere (the replay's server counters) in place of ``advance``."""
        with self._lock:
            self.count = int(count)
        self.beat(worked=True)

    @contextlib.contextmanager
    def waiting(self, on: str) -> Iterator[None]:
        """A wait for another role: alive meanwhile (that role is watched on its own)."""
        me = threading.get_ident()
        with self._lock:
            self._waiting[me] = on
        try:
            yield
        finally:
            with self._lock:
                self._waiting.pop(me, None)
                self._beat = time.monotonic()  # the wait's end is a beat; its length is no pause

    def report(self) -> dict:
        """What the driver reads: count, seconds since the last beat, longest pause, phase."""
        with self._lock:
            waiting = sorted(set(self._waiting.values()))
            silent = 0.0 if waiting else time.monotonic() - self._beat
            return {
                "count": self.count,
                "silent_s": silent,
                "longest_pause_s": self._longest_pause,
                "phase": self.phase,
                "waiting_on": ",".join(waiting) or None,
            }


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds the process ``pid`` of this host has used (user + system), or None if it is gone.

    A role that is starting may hold Python's lock for long stretches (an XLA compile) and then answers
    no call, yet its CPU time advances; a frozen one (SIGSTOP, a wedged driver) neither answers nor
    computes."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    if fields[0] in ("Z", "X"):  # a zombie or dead process
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
