"""What every command-line entry point shares: one-line usage errors with exit code 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from absl import app, logging


class UsageError(Exception):
    """Bad input from the user: printed as one ``error:`` line, exit code 2."""


class RoleFailed(RuntimeError):
    """A role (collector, learner, replay) of a distributed run died for good; the message names it
    and its error. Printed as one ``error:`` line, exit code 1."""


def run_main(main: Callable[[list[str]], int]) -> None:
    """``app.run`` with quiet logging and ``UsageError`` turned into ``error: ...`` / exit 2."""

    def entry(argv) -> None:
        logging.set_verbosity(logging.WARNING)  # keep orbax/absl chatter out of progress output
        try:
            sys.exit(main(argv))
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(entry)


def check_writable_dir(path: str | Path, flag: str) -> None:
    """``UsageError`` unless ``path`` is a directory this process can write, or can be created as
    one (its first existing ancestor is a writable directory). Creates and changes nothing."""
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
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "it" if probe == path else f"its parent {probe}"
        raise UsageError(f"{flag} {path} is not writable: no permission to write in {where}")
