"""Shared fixtures: compiled functions are built once per session, not per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# The kill and freeze tests run with JAX's persistent compilation cache on, as studies do: a role
# restarted after kill -9 or SIGSTOP loads its programs from it, and a killed role may leave an entry
# half-written (docs/testing.md, "Faults with the persistent compilation cache"). One cache for the
# session, set in the environment of the runs these tests start; threshold 0: every program cached.
XLA_CACHE_TESTS = ("test_faults", "test_liveness", "test_elastic")


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(autouse=True)
def _xla_cache_for_kill_and_freeze_tests(request, monkeypatch):
    if Path(str(request.fspath)).stem in XLA_CACHE_TESTS and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(request.getfixturevalue("xla_cache")))
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


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
