"""The Ray cluster a run uses: an embedded local one by default, or an existing one at an address.

One connect for every launcher (a distributed run, the study runner), and one check that a run's
roles fit the cluster before any actor is created. Bad addresses and small clusters give a
one-line ``ConfigError``.
"""

from __future__ import annotations

import os
import socket
import sys
import warnings

import ray

from deepcrl.configs.experiment import Experiment
from deepcrl.configs.validation import ConfigError

ROLE_ENV = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}}  # TensorFlow's start-up lines off in every worker


def connect(address: str | None, num_cpus: int | None = None, log_to_driver: bool = True):
    """Join the Ray cluster at ``address`` (``HOST:PORT``), or start an embedded local one with
    ``num_cpus`` (default: this machine's cores, at least 8: roles are I/O- and XLA-bound, let them
    all start). Already connected: that connection. Unreachable → ``ConfigError``."""
    if ray.is_initialized():
        return ray
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes around role prefixes in log files
    # Ray fork-execs its daemons; JAX, when already imported, warns about any fork.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, runtime_env=ROLE_ENV, log_to_driver=log_to_driver, logging_level="ERROR")
        except ConnectionError as e:
            raise ConfigError(
                f"cannot join the Ray cluster at {address} ({str(e).strip()}); if the cluster uses token "
                "authentication, give this process the same RAY_AUTH_MODE / token settings"
            ) from None
        return ray
    ray.init(
        address="local",  # always a fresh embedded cluster, never a stale `ray start` one recorded in /tmp/ray
        num_cpus=num_cpus or max(os.cpu_count() or 1, 8),
        include_dashboard=False,
        runtime_env=ROLE_ENV,
        logging_level="ERROR",
        log_to_driver=log_to_driver,
    )
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast with one line instead of Ray's long retry loop."""
    host = address.replace("ray://", "").rsplit(":", 1)
    if len(host) != 2 or not host[1].isdigit():
        raise ConfigError(f"ray_address must look like HOST:PORT (e.g. 127.0.0.1:6379), got {address!r}")
    try:
        socket.create_connection((host[0], int(host[1])), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def check_resources(cluster: dict, experiment: Experiment) -> None:
    """``ConfigError`` before any actor is created if the run's roles cannot be placed on ``cluster``
    (``ray.cluster_resources()``)."""
    need_cpu, need_gpu = experiment.resources()
    have_cpu, have_gpu = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if need_cpu <= have_cpu + 1e-9 and need_gpu <= have_gpu + 1e-9:
        return
    c, n = experiment.config, len(experiment.learners)
    cpus_per_role = float(c.get("cpus_per_role", 1.0))
    raise ConfigError(
        f"topology {c.topology} needs {need_cpu:g} CPUs ({n + 2} roles x cpus_per_role {cpus_per_role:g}) "
        f"and {need_gpu:g} GPUs ({n} learners x gpus_per_learner {float(c.gpus_per_learner):g} + "
        f"gpus_per_collector {float(c.gpus_per_collector):g}), but the Ray cluster has {have_cpu:g} CPUs "
        f"and {have_gpu:g} GPUs; lower --cpus_per_role / --gpus_per_learner / --gpus_per_collector or use a "
        "bigger cluster"
    )
