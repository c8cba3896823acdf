"""Shared fixtures: compiled functions are built once per session, not per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from ray_cluster import ENV as RAY_ENV
from ray_cluster import LoopbackCluster

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
def replay_server(replay, request):
    """``start(spec) -> (server, address)`` of the backend ``replay``, for tests that drive roles as plain
    objects: the Ray backend's store is an actor, so this process joins the session's Ray cluster."""
    if replay == "ray":
        request.getfixturevalue("joined_ray")
    return replay_backend.load(replay).start_server


# --------------------------------------------------------------------------- one Ray cluster
# A distributed run on the embedded default starts and stops a Ray of its own (~5 s and ~3 CPU-seconds
# on two cores). The runs whose test is about something else (a fault, a liveness check, attach/detach)
# join this one instead, as a user's runs join a cluster with --ray_address: a head on loopback with the
# embedded default's 8 CPUs, started when first asked for and stopped, every process of it, at the end
# of the session. Its workers run with the session's XLA cache. Runs that must start their own Ray (the
# embedded default's own tests, those that pass settings to roles through the environment, the driver
# killed) do not take it.
@pytest.fixture(scope="session")
def _session_cluster(xla_cache):
    cluster = LoopbackCluster({
        "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", str(xla_cache)),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "TF_CPP_MIN_LOG_LEVEL": "2",
    })  # fmt: skip
    try:
        cluster.start_head(num_cpus=8)
        yield cluster
    finally:
        _, left = cluster.stop()
        assert not left, f"the session's Ray cluster left processes {left}"


@pytest.fixture
def shared_ray(_session_cluster, monkeypatch) -> list[str]:
    """``["--ray_address", ADDRESS]`` of the session's cluster, for a run this test starts."""
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    return ["--ray_address", _session_cluster.address]


@pytest.fixture(scope="module")
def joined_ray(_session_cluster):
    """This test process joined to the session's Ray cluster for a module's tests (already joined: as is)."""
    import ray

    if ray.is_initialized():
        yield
        return
    saved = {name: os.environ.get(name) for name in RAY_ENV}
    os.environ.update(RAY_ENV)
    ray.init(address=_session_cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
