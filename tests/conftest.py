"""Shared fixtures: compiled functions are built once per session, not per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from deepcrl.buffer import replay_backend

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# The runs the tests start (run.py, study.py, roles) use JAX's persistent compilation cache, one for the
# session, as studies do: every role of every run compiles the same few small programs, so a test's
# roles (and a role restarted after kill -9 or SIGSTOP) load them instead of compiling again; a killed role
# may leave an entry half-written (docs/testing.md, "Faults with the persistent compilation cache").
# Set in the environment of the processes they start (this process's JAX read its settings at import).
# Threshold 0: every program cached. Not for the tests that inspect what XLA compiles, nor those that
# manage a cache of their own.
FRESH_COMPILE_TESTS = ("test_devices", "test_xla_cache", "test_studies")


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(autouse=True)
def _xla_cache_for_the_runs_tests_start(request, monkeypatch):
    if Path(str(request.fspath)).stem not in FRESH_COMPILE_TESTS and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(request.getfixturevalue("xla_cache")))
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


# Files whose tests start processes that watch each other's progress, wait on timeouts or time an answer
# (distributed runs, faults, signals, replay servers, studies): ./test.sh runs them one at a time. Every
# other test is in-process or a single run, and runs on both cores (pytest-xdist).
SERIAL_FILES = (
    "test_distributed", "test_faults", "test_elastic", "test_liveness", "test_start_faults", "test_studies",
    "test_run_protection", "test_ray_replay", "test_reverb_replay", "test_replay_checkpoints", "test_replay_seam",
    "test_seeds",
)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in SERIAL_FILES:
            item.add_marker(pytest.mark.serial)


# --------------------------------------------------------------------------- the replay backend
# Every distributed test takes the fixture ``replay`` (a backend name) and passes ``--replay`` to its
# run, so one test body runs on each backend chosen here: this install's default (Reverb where it
# installs, Ray's on the latest lane) unless ``--replay-backends`` names others ("all": every backend
# installed here). CI runs the pinned lane on Reverb and the latest lane on Ray.
def pytest_addoption(parser):
    parser.addoption(
        "--replay-backends", default="default",
        help="replay backends the distributed tests run on: default (this install's), all (every one "
        "installed here) or a comma-separated list of reverb, ray",
    )  # fmt: skip


def _chosen_backends(config) -> list[str]:
    asked = config.getoption("--replay-backends")
    if asked == "default":
        return [replay_backend.default()]
    if asked == "all":
        return [b for b in replay_backend.BACKENDS if replay_backend.available(b)]
    chosen = [b.strip() for b in asked.split(",") if b.strip()]
    for b in chosen:
        problem = replay_backend.problem(b)
        if problem:
            raise pytest.UsageError(f"--replay-backends: {problem}")
    return chosen


def pytest_generate_tests(metafunc):
    if "replay" in metafunc.fixturenames:
        metafunc.parametrize("replay", _chosen_backends(metafunc.config))


@pytest.fixture
def replay_server(replay):
    """``start(spec) -> (server, address)`` of the backend ``replay``, for tests that drive roles as plain
    objects: the Ray backend's store is an actor, so it gets a small Ray of the test's own on loopback,
    stopped after the test."""
    started = False
    if replay == "ray":
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                     logging_level="ERROR", log_to_driver=False)  # fmt: skip
    yield replay_backend.load(replay).start_server
    if started:
        ray.shutdown()


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
