"""Shared fixtures: compiled functions are built once per session, not per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def run_cli(*args: str, timeout: float = 600, env: dict | None = None):
    """Run ``launch/run.py`` in a fresh process, the way a user does."""
    import subprocess

    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def is_number(cell: str) -> bool:
    """A report table cell that holds a number, optionally "mean ± half-width"."""
    try:
        float(cell.split("±")[0].replace(",", ""))
        return True
    except ValueError:
        return False
