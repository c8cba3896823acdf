"""What every command-line entry point shares: one-line usage errors with exit code 2."""

from __future__ import annotations

import os
import select
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from absl import app, logging


class UsageError(Exception):
    """Bad input from the user: printed as one ``error:`` line, exit code 2."""


class Interrupted(RuntimeError):
    """The run was stopped by Ctrl-C or SIGTERM after it saved what it could; exit code 130."""


class StopSignals:
    """Ctrl-C and SIGTERM (a scheduler's preemption) stop a run, within ``grace_s`` whatever it is doing.

    The first signal sets ``requested`` and raises ``KeyboardInterrupt`` in the main thread, so the run
    stops its roles and keeps its checkpoints; loops that wait on other processes also check
    ``requested`` (a library may swallow the exception). Python runs signal handlers only between
    bytecodes, so a main thread inside a long native call (an XLA compile) would not see it: a thread
    woken by the signal itself (``signal.set_wakeup_fd``) ends the process ``grace_s`` after the first
    signal, and at once on a second one, with exit code 130. ``on_hard_exit`` runs before that exit
    (e.g. marking ``roles.json`` stopped).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, grace_s: float = 25.0):
        self.grace_s = grace_s
        self.requested = threading.Event()
        self.count = 0
        self.on_hard_exit: list[Callable[[], None]] = []
        self.resume_hint = ""
        self._pipe: tuple[int, int] | None = None
        self._default_unraisable = sys.unraisablehook

    def install(self) -> None:
        """(Re)install the handlers: call again after a library replaced them (``ray.init`` does)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            signal.signal(sig, self._handler)
        if sys.unraisablehook is not self._unraisable:
            self._default_unraisable = sys.unraisablehook
            sys.unraisablehook = self._unraisable
        if self._pipe is None:
            self._pipe = os.pipe()
            os.set_blocking(self._pipe[1], False)
            threading.Thread(target=self._watch, name="stop-signals", daemon=True).start()
        signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)

    def _handler(self, signum, frame) -> None:
        if self.requested.is_set():
            return  # the second one: the watcher thread ends the process
        self.requested.set()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping the run, keeping its checkpoints (again: stop at once)", file=sys.stderr)
        raise KeyboardInterrupt

    def _unraisable(self, unraisable) -> None:
        """The handler's ``KeyboardInterrupt`` raised while the main thread ran a callback Python cannot
        raise from (a garbage-collector callback of XLA's, seen in CI): Python would print it as a
        traceback and go on. It is dropped silently here; the run's loops call ``check()`` and stop."""
        if issubclass(unraisable.exc_type, KeyboardInterrupt) and self.requested.is_set():
            return
        self._default_unraisable(unraisable)

    def _watch(self) -> None:
        deadline = None
        while True:
            ready, _, _ = select.select([self._pipe[0]], [], [], 1.0)
            if ready:
                got = [b for b in os.read(self._pipe[0], 64) if b in (int(s) for s in self.SIGNALS)]
                self.count += len(got)
                if got and deadline is None:
                    deadline = time.monotonic() + self.grace_s
            if self.count >= 2:
                self._hard_exit("stopped at once (second signal)")
            if deadline is not None and time.monotonic() > deadline:
                self._hard_exit(f"not stopped within {self.grace_s:.0f} s; ended")

    def _hard_exit(self, why: str) -> None:
        for callback in self.on_hard_exit:
            try:
                callback()
            except Exception:  # best effort: the exit must happen
                pass
        print(f"interrupted: {why}. {self.resume_hint}".strip(), file=sys.stderr, flush=True)
        os._exit(130)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop was asked (for loops that may have lost the first one)."""
        if self.requested.is_set():
            raise KeyboardInterrupt


STOP = StopSignals()  # one per process: the entry point installs it


class RoleFailed(RuntimeError):
    """A role (collector, learner, replay) of a distributed run died for good; the message names it
    and its error. Printed as one ``error:`` line, exit code 1."""


def run_main(main: Callable[[list[str]], int]) -> None:
    """``app.run`` with quiet logging and ``UsageError`` turned into ``error: ...`` / exit 2."""

    def entry(argv) -> None:
        # Keep orbax/absl chatter out of the console: their errors reach us as exceptions, said in one line
        # (a full disk made orbax log three tracebacks before raising).
        logging.set_verbosity(logging.FATAL)
        try:
            sys.exit(main(argv))
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    STOP.install()
    app.run(entry)


def check_writable_dir(path: str | Path, flag: str) -> None:
    """``UsageError`` unless ``path`` is a directory this process can write, or can be created as
    one (its first existing ancestor is a writable directory). Leaves nothing behind (the proof that
    it can write is an empty folder, made and removed)."""
    path = Path(path).absolute()
    try:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{flag} {path} is a file, not a directory")
        probe = path
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            raise UsageError(f"{flag} {path} cannot be created: {probe} is a file, not a directory")
    except OSError as e:  # e.g. a parent that cannot be searched
        raise UsageError(f"{flag} {path} cannot be used: {e.strerror or e}") from None
    where = "it" if probe == path else f"its parent {probe}"
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path} is not writable: no permission to write in {where}")
    try:  # access() says yes to root on /proc and the like: make (and remove) an empty folder to be sure
        st = probe.stat()
        os.rmdir(tempfile.mkdtemp(prefix=".deepcrl-probe-", dir=probe))
        os.utime(probe, ns=(st.st_atime_ns, st.st_mtime_ns))  # and leave its times as they were
    except OSError as e:
        raise UsageError(f"{flag} {path} cannot be created: writing in {where} fails ({e.strerror or e})") from None
