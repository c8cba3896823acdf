"""Distributed topologies on Ray: a Reverb replay service, one collector, its learners.

Every role is a Ray actor (``launch/ray_roles.py``) wrapping a plain class of
``roles/`` (``Collector``, ``Learner``, ``ReplayService``; their contract is
``roles/contract.py``). With no ``ray_address`` an embedded local Ray is
started; otherwise the run joins that cluster. The driver wires the roles,
watches them (``launch/supervise.py``), and writes the run's summary.

Fault tolerance: a role that dies is re-created by the driver from its latest
checkpoint (learners, collector) or Reverb checkpoint (replay, on the same
port so clients reconnect by themselves); ``RUN/roles.json`` shows every
role's node, PID, restarts and last error. While a learner is down the replay
service drains its table so the rate limiter never stalls the collector or the
other learners. A role that dies more than ``max_role_restarts`` times ends the
run with its name and error, except a train-only learner, which is dropped.
Ctrl-C stops every role cleanly, keeping their final checkpoints, and
``run.py --resume --run_dir RUN`` continues a run whose driver died.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import ray
from ml_collections import ConfigDict

from deepcrl.configs.budget import check_nodes
from deepcrl.configs.resolve import ConfigError, build_env, replay_spec, validate
from deepcrl.configs.topologies import Role, resolve_roles
from deepcrl.launch.progress import RoleWatcher
from deepcrl.launch.supervise import RoleFailed, Supervisor
from deepcrl.rundir.metrics import publish_to_wandb, read_metrics, write_config
from deepcrl.rundir.plots import plot_success


def connect_ray(address: str):
    """Start an embedded local Ray, or join ``address``; unreachable → ConfigError."""
    if ray.is_initialized():
        return ray
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes around role prefixes in log files
    env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}}
    if address:
        host = address.replace("ray://", "").rsplit(":", 1)
        if len(host) != 2 or not host[1].isdigit():
            raise ConfigError(f"ray_address must look like HOST:PORT (e.g. 127.0.0.1:6379), got {address!r}")
        try:  # fail fast with one line instead of Ray's long retry loop
            socket.create_connection((host[0], int(host[1])), timeout=5).close()
        except OSError as e:
            raise ConfigError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None
        try:
            ray.init(address=address, runtime_env=env, log_to_driver=True, logging_level="ERROR")
        except ConnectionError as e:
            raise ConfigError(
                f"cannot join the Ray cluster at {address} ({str(e).strip()}); if the cluster uses token "
                "authentication, give this process the same RAY_AUTH_MODE / token settings"
            ) from None
    else:
        ray.init(
            address="local",  # never join a stale `ray start` cluster recorded in /tmp/ray
            num_cpus=max(os.cpu_count() or 1, 8),  # roles are I/O- and XLA-bound; let them all start
            include_dashboard=False,
            runtime_env=env,
            logging_level="ERROR",
        )
    return ray


def check_resources(cluster: dict, config: ConfigDict, num_learners: int) -> None:
    """Fail before creating any actor if the topology cannot be placed on the cluster."""
    cpus_per_role = float(config.get("cpus_per_role", 1.0))
    gpus_l, gpus_c = float(config.gpus_per_learner), float(config.gpus_per_collector)
    roles = num_learners + 2  # + collector + replay
    need_cpu = cpus_per_role * roles
    need_gpu = gpus_l * num_learners + gpus_c
    have_cpu, have_gpu = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if need_cpu > have_cpu + 1e-9 or need_gpu > have_gpu + 1e-9:
        raise ConfigError(
            f"topology {config.topology} needs {need_cpu:g} CPUs ({roles} roles x cpus_per_role {cpus_per_role:g}) "
            f"and {need_gpu:g} GPUs ({num_learners} learners x gpus_per_learner {gpus_l:g} + gpus_per_collector "
            f"{gpus_c:g}), but the Ray cluster has {have_cpu:g} CPUs and {have_gpu:g} GPUs; lower "
            "--cpus_per_role / --gpus_per_learner / --gpus_per_collector or use a bigger cluster"
        )


def summary_table(rows: list[dict]) -> str:
    cols = [
        "learner",
        "depth",
        "updates",
        "samples_drawn",
        "env_steps",
        "final_time_at_goal",
        "final_success",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def roles_table(roles: dict, collector: dict | None) -> str:
    """One line per role: restarts (deaths and stalls), downtime and data lost."""
    lines = ["| role | status | restarts | deaths | stalls | downtime_s | last_error |", "|---" * 7 + "|"]
    for name, r in roles.items():
        err = (r.get("last_error") or "").replace("|", "/")
        counts = f"{r['restarts']} | {r.get('deaths', 0)} | {r.get('stalls', 0)}"
        lines.append(f"| {name} | {r['status']} | {counts} | {r['downtime_s']:.1f} | {err} |")
    if isinstance(collector, dict):
        lines.append(
            f"\nsegments handed to the replay: {collector.get('segments_written')}, "
            f"lost to failures: {collector.get('segments_lost', 0)}"
        )
    return "\n".join(lines)


def run_distributed(config: ConfigDict, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Run a distributed topology to the end; returns the driving learner's summary row.

    With ``resume`` every role continues from its checkpoint in ``run_dir`` (the
    replay from its latest Reverb checkpoint): a run whose driver died goes on.
    """
    env = build_env(config)
    layout = validate(config, env)
    collector_role, learners = resolve_roles(config)
    names = [r.name for r in learners]
    spec = replay_spec(config, env, layout, names)
    connect_ray(config.ray_address)
    try:
        check_resources(ray.cluster_resources(), config, len(learners))
        if config.ray_address:  # roles run on the cluster's nodes: the largest must fit on one
            check_nodes(config.get("memory_estimate"), ray.nodes())
    except ConfigError:
        if not config.ray_address:
            ray.shutdown()
        raise
    run_dir = Path(run_dir).absolute()
    write_config(run_dir, config)
    started = time.time()
    sup = Supervisor(ray, config, run_dir, spec, collector_role, learners, resume=resume)
    watcher = RoleWatcher(run_dir, ["collector", *names], layout.total_env_steps) if progress else None
    try:
        results, replay_info = sup.run()
    finally:
        if watcher is not None:
            watcher.close()
        sup.shutdown()
        if not config.ray_address:
            ray.shutdown()

    rows = []
    for role in learners:
        r = results.get(role.name)
        if isinstance(r, dict):
            rows.append({**r, "depth": f"{role.critic_depth}"})
    collector = results.get("collector")
    if isinstance(collector, dict) and replay_info:
        # Every segment handed to the writer is in the tables' insert counts, unless a failure lost it.
        inserted = replay_info[names[0]]["num_inserts"]
        collector["segments_lost"] = max(0, collector["segments_written"] - inserted)
    summary = {
        "topology": config.topology,
        "wall_time_s": time.time() - started,
        "collector": collector,
        "learners": rows,
        "replay_tables": replay_info,
        "roles": sup.roles.roles,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    table = summary_table(rows)
    roles = roles_table(sup.roles.roles, collector)
    (run_dir / "summary.md").write_text(f"# {config.topology} on {config.env}\n\n{table}\n\n{roles}\n")
    curves = {
        f"{r.name} (depth {r.critic_depth})": read_metrics(run_dir / r.name / "metrics.jsonl")
        for r in learners
    }
    plot_success(curves, run_dir / "success.png", title=f"{config.topology} — {config.env}")
    publish_to_wandb(run_dir, "driver", {"wall_time_s": summary["wall_time_s"], **(rows[0] if rows else {})})
    print(table)
    print(roles)
    keys = {"eval/success": "final_success", "eval/time_at_goal": "final_time_at_goal"}
    keys["eval/time_at_goal_frac"] = "final_time_at_goal_frac"
    return {k: rows[0].get(v) for k, v in keys.items()} if rows else {}


__all__ = ["run_distributed", "RoleFailed", "Role", "connect_ray", "check_resources"]
