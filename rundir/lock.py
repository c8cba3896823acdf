"""One driver per run directory: an OS lock held for the driver's whole life, plus a heartbeat.

``RUN/driver.lock`` holds the live driver's host, PID and start time (and is removed when it ends). The driver keeps an exclusive
``flock`` on it (released by the kernel when the process dies, however it dies: a stale lock never
blocks a resume) and touches it every ``HEARTBEAT_S`` seconds. File systems that do not carry locks
between hosts (some NFS set-ups) would let a driver on another host take the lock too, so a lock file
written by another host and touched within ``STALE_S`` seconds also counts as live.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

LOCK_NAME = "driver.lock"
HEARTBEAT_S = 10.0
STALE_S = 45.0


class RunDirBusy(RuntimeError):
    """Another driver is live on the run directory; the message (one line) names its host and PID."""


def _describe(owner: dict, run_dir: Path) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return (
        f"{run_dir} is in use by a live driver (host {owner.get('host', '?')}, PID {owner.get('pid', '?')}, "
        f"since {since}); wait for it to end or stop it (Ctrl-C), or give another --run_dir"
    )


def _read_owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text() or "{}")
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def live_driver(run_dir: str | Path) -> str | None:
    """A line naming the driver live on ``run_dir``, or None. Reads only: creates and changes nothing."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return None
    owner = _read_owner(path)
    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _describe(owner, Path(run_dir))
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return None
    if _remote_heartbeat(path, owner):
        return _describe(owner, Path(run_dir))
    return None


def _remote_heartbeat(path: Path, owner: dict) -> bool:
    """A lock file of another host, touched recently: that driver is live (its lock may not reach us)."""
    if not owner or owner.get("host") == socket.gethostname():
        return False
    try:
        return time.time() - path.stat().st_mtime < STALE_S
    except OSError:
        return False


class DriverLock:
    """``with DriverLock(run_dir):`` holds the run directory for this process (``RunDirBusy`` if taken)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._file = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> DriverLock:
        busy = live_driver(self.run_dir)
        if busy:
            raise RunDirBusy(busy)
        self._made_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._before = self._state()
        f = open(self.path, "a+")  # not truncated before the lock is ours: the owner's facts stay readable
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise RunDirBusy(_describe(_read_owner(self.path), self.run_dir)) from None
        f.seek(0)
        f.truncate()
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        f.write(json.dumps(owner) + "\n")
        f.flush()
        self._dir_mtime = self.run_dir.stat().st_mtime_ns
        self._file = f
        self._thread = threading.Thread(target=self._beat, name="driver-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:  # the folder was moved or the disk is gone: the flock still holds
                pass

    def _state(self) -> tuple:
        """The lock file's bytes and times, and the folder's times, before this driver came."""
        try:
            st = self.path.stat()
            old = (self.path.read_bytes(), (st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            old = None
        st = self.run_dir.stat()
        return old, (st.st_atime_ns, st.st_mtime_ns)

    def release(self) -> None:
        """Let go, leaving the lock file and the folder as they were before (a run refused after it
        took the lock, e.g. a damaged checkpoint, changes nothing in its run directory)."""
        self._stop.set()
        if self._file is None:
            return
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None
        (old, dir_times) = self._before
        try:
            untouched = self.run_dir.stat().st_mtime_ns == self._dir_mtime  # no entry added or removed since
            if old is None:
                self.path.unlink(missing_ok=True)
            else:
                self.path.write_bytes(old[0])
                os.utime(self.path, ns=old[1])
            if self._made_dir and untouched:
                self.run_dir.rmdir()  # made for a run that wrote nothing
            elif untouched:
                os.utime(self.run_dir, ns=dir_times)
        except OSError:  # moved or removed meanwhile: nothing to put back
            pass

    def __enter__(self) -> DriverLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
