"""Live progress of a run on stderr: one line per role, drawn by rich.

``single`` has one line; the distributed driver has one per role (collector,
every learner), fed by ``RoleWatcher`` from the rows each role appends to its
own ``metrics.jsonl``, so roles need no channel to the driver. Each line shows
env steps done of the total, env steps/s, the last evaluation's success and
time at goal, elapsed and remaining time.

On a terminal the lines redraw in place; in a log file (no TTY) each update is
one plain line, so ``nohup`` logs stay readable.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any


def stats_text(row: Mapping[str, Any] | None, rate: float | None = None) -> str:
    """``1,234 steps/s  success 0.42  time at goal 17.3`` from a metrics row (fields it lacks are left out)."""
    row = row or {}
    parts = []
    rate = row.get("env_steps_per_s", rate)
    if isinstance(rate, (int, float)):
        parts.append(f"{rate:,.0f} steps/s")
    for key, label, fmt in (
        ("eval/success", "success", "{:.2f}"),
        ("eval/time_at_goal", "time at goal", "{:.1f}"),
        ("train/time_at_goal_frac", "train time at goal (frac)", "{:.2f}"),
        ("updates", "updates", "{:,}"),
    ):
        value = row.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {fmt.format(value)}")
    return "  ".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunProgress:
    """Progress lines, one per name; ``update(name, done, row)`` after each metrics row.

    ``done``: the counts already done when this session began (a resumed run), so the rate shown
    counts this session's steps over this session's time, not the whole run's over this session's.
    Until a name's first update its line says ``waiting`` ("compiling": XLA compiles the first
    epoch's programs, which takes from seconds to minutes, while the bar cannot move).
    """

    def __init__(
        self,
        totals: Mapping[str, int],
        stream: IO[str] | None = None,
        done: Mapping[str, int] | None = None,
        waiting: str = "compiling",
    ):
        self.stream = stream or sys.stderr
        self.totals = dict(totals)
        self.done_before = dict(done or {})
        self.start = time.time()
        self.waiting = waiting
        self._live = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.table import Column

            width = max(len(n) for n in self.totals) if self.totals else 6
            self._live = Progress(
                TextColumn("{task.description}", table_column=Column(min_width=width, no_wrap=True)),
                BarColumn(bar_width=16),
                TextColumn(
                    "{task.completed:,.0f}/{task.total:,.0f}", table_column=Column(no_wrap=True, min_width=15)
                ),
                TimeElapsedColumn(),
                TextColumn(
                    "{task.fields[stats]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)
                ),
                console=Console(file=self.stream),
                refresh_per_second=2,
                expand=True,
            )
            self._tasks = {n: self._live.add_task(n, total=t, stats=waiting) for n, t in self.totals.items()}
            self._live.start()
        else:
            for name in self.totals:
                self._plain(name, f"{waiting}…")

    def add(self, name: str, total: int, done: int = 0) -> None:
        self.totals[name], self.done_before[name] = total, done
        if self._live is not None:
            self._tasks[name] = self._live.add_task(name, total=total, stats=self.waiting)
        else:
            self._plain(name, f"{self.waiting}…")

    def update(self, name: str, done: int, row: Mapping[str, Any] | None = None) -> None:
        rate = max(done - self.done_before.get(name, 0), 0) / max(time.time() - self.start, 1e-9)
        text = stats_text(row, rate)
        if self._live is not None:
            self._live.update(self._tasks[name], completed=done, stats=text)
            return
        total = self.totals.get(name, 0)
        pct = 100.0 * done / total if total else 0.0
        self._plain(name, f"{done:,}/{total:,} steps ({pct:.0f}%)  {text}  {_clock(time.time() - self.start)}")

    def _plain(self, name: str, text: str) -> None:
        """One line of a log (no terminal)."""
        self.stream.write(f"[{name}] {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def last_row(path: Path) -> dict | None:
    """The last complete row of a ``metrics.jsonl`` (None while it has none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:  # a line being written, or cut by the seek
            continue
    return None


class RoleWatcher:
    """Polls each role's ``RUN/<role>/metrics.jsonl`` and shows its last row as that role's line."""

    def __init__(self, run_dir: Path, roles: Sequence[str], total_env_steps: int, period_s: float = 2.0,
                 stream: IO[str] | None = None):  # fmt: skip
        self.run_dir, self.roles, self.period_s = Path(run_dir), list(roles), period_s
        self.total = total_env_steps
        # Rows of an earlier session (a resume): the rates shown count from there.
        before = {
            r: int((last_row(self.run_dir / r / "metrics.jsonl") or {}).get("env_steps", 0)) for r in roles
        }
        self.progress = RunProgress({r: total_env_steps for r in self.roles}, stream=stream, done=before,
                                    waiting="starting, compiling")  # fmt: skip
        self._seen: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def add(self, role: str) -> None:
        """A role that joined the live run gets its line."""
        self.progress.add(role, self.total)
        self.roles.append(role)

    def poll(self) -> None:
        for role in list(self.roles):
            row = last_row(self.run_dir / role / "metrics.jsonl")
            if row is not None and row != self._seen.get(role):
                self._seen[role] = row
                self.progress.update(role, int(row.get("env_steps", 0)), row)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()
        self.progress.close()
