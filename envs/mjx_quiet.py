"""Import MuJoCo's MJX once without its two "Failed to import warp" lines.

mujoco-mjx prints ``Failed to import warp: ...`` and ``Failed to import
mujoco_warp: ...`` on stdout whenever NVIDIA Warp is absent. We run MJX's JAX
implementation only (Warp is an optional ~400 MB GPU backend we never select),
so on every run and in every Ray role the lines are noise that reads like an
error. Importing ``mujoco.mjx`` here first, dropping exactly those lines and
passing anything else through, leaves every later ``from mujoco import mjx``
(Brax's included) silent, because Python imports a module once per process.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys

_WARP_ABSENT = ("Failed to import warp:", "Failed to import mujoco_warp:")


def import_quietly(module: str) -> None:
    """Import ``module`` with the Warp-absent notices removed from what it prints on stdout."""
    if module in sys.modules:
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            importlib.import_module(module)
    finally:
        kept = [
            line
            for line in captured.getvalue().splitlines(keepends=True)
            if not line.startswith(_WARP_ABSENT)
        ]
        if kept:
            sys.stdout.write("".join(kept))


def import_mjx_quietly() -> None:
    """Import ``mujoco.mjx`` without its Warp-absent notices."""
    import_quietly("mujoco.mjx")
