"""What every command-line entry point shares: one-line usage errors with exit code 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import app, logging


class UsageError(Exception):
    """Bad input from the user: printed as one ``error:`` line, exit code 2."""


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
