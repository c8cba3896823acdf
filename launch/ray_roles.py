"""Roles on Ray: every role class becomes a Ray actor here, and nowhere else.

The roles (``roles/``) know nothing of Ray. ``named_role`` adds to a role class what
``roles/contract.Hosted`` declares (a start in two steps, and ``whoami``); ``create`` makes it an
actor with its share of the node's CPUs and GPUs; ``sigkill_on_node`` ends a role's process for
certain, on whichever node it runs. The supervisor (``launch/supervise.py``) calls nothing else of Ray's
actor API.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def named_role(cls: type, name: str) -> type:
    """``cls`` as a Ray actor class for the role ``name``, built in two steps.

    Creating the actor only records the arguments, so ``whoami()`` answers (PID, node) at once;
    ``start()`` then builds the role (``cls.__init__``: envs, networks, Reverb clients) and returns
    ``ready()``'s facts plus the accelerators it sees. The driver can therefore kill a role that
    hangs in its start-up by PID, and tell a slow start from a stalled one. Its repr is the role's
    name, so Ray prefixes its log lines ``(learner_0 pid=…)``.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._role_args = (args, kwargs)

    def start(self) -> dict:
        args, kwargs = self._role_args
        _start_pause(name)
        cls.__init__(self, *args, **kwargs)
        return {**self.ready(), **whoami(devices=True)}

    def where(self) -> dict:
        return whoami(devices=False)  # answers while start() runs: no JAX call that could hang

    members = {"__init__": __init__, "start": start, "whoami": where, "__repr__": lambda self: name}
    return type(cls.__name__, (cls,), members)


def _start_pause(name: str) -> None:
    """Test hook (tests/test_start_faults.py): a role named in ``$DEEPCRL_START_PAUSE`` ("replay:6,
    collector:6") waits that long as its start begins, so a fault can land while it is starting."""
    for item in os.environ.get("DEEPCRL_START_PAUSE", "").split(","):
        role, _, seconds = item.partition(":")
        if role == name:
            time.sleep(float(seconds or 5))


def whoami(devices: bool) -> dict:
    """Where the calling role runs: node and its IP, Ray node id, PID, the GPUs Ray gave it (and JAX's
    devices)."""
    facts = {
        "pid": os.getpid(),
        "node": socket.gethostname(),
        "ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
    }
    if devices and "jax" in sys.modules:  # a role that uses JAX has initialised it by now; the replay not
        facts["jax_devices"] = [str(d) for d in sys.modules["jax"].devices()]
    return facts


def actor_options(num_gpus: float, num_cpus: float = 1.0, concurrency: int = 1) -> dict:
    opts: dict = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_concurrency": concurrency}
    if num_gpus:
        # Several roles may share a GPU: cap each process's JAX preallocation to its share.
        frac = min(0.95, 0.9 * num_gpus)
        opts["runtime_env"] = {"env_vars": {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{frac:.3f}"}}
    return opts


def create(cls: type, name: str, *args, num_gpus: float, num_cpus: float, concurrency: int):
    """A new actor of role class ``cls`` named ``name``, built from ``args`` by its ``start()``."""
    actor = ray.remote(named_role(cls, name)).options(**actor_options(num_gpus, num_cpus, concurrency))
    return actor.remote(*args)


def sigkill_on_node(node_id: str, pid: int, timeout_s: float = 30) -> None:
    """SIGKILL ``pid`` on the node ``node_id`` (a Ray task pinned there)."""
    on_node = NodeAffinitySchedulingStrategy(node_id, soft=False)
    kill = ray.remote(num_cpus=0)(_sigkill).options(scheduling_strategy=on_node)
    ray.get(kill.remote(int(pid)), timeout=timeout_s)


def _sigkill(pid: int) -> None:
    """Run on a role's node: SIGKILL the role's process."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
