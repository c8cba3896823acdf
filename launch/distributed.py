"""Distributed topologies on Ray: a Reverb replay service, one collector, its learners.

Every role is a Ray actor wrapping a plain class (``Collector``,
``Learner``, ``ReplayService``). With no ``ray_address`` an embedded local Ray
is started; otherwise the run joins that cluster. The driver only wires the
roles, watches them, and writes the run's summary: a role that dies fails the
run with its error, and Ctrl-C stops every role cleanly, keeping their final
checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ml_collections import ConfigDict

from deepcrl.configs.resolve import ConfigError, build_env, replay_spec, validate
from deepcrl.configs.topologies import Role, resolve_roles
from deepcrl.rundir.metrics import read_metrics, write_config
from deepcrl.rundir.plots import plot_success


class RoleFailed(RuntimeError):
    """A role (collector, learner, replay) died; the message names it and its error."""


class ReplayService:
    """The Reverb server as a role: its address is handed to the collector and learners."""

    def __init__(self, spec, checkpoint_dir: str | None):
        from deepcrl.buffer.reverb_replay import start_server

        self.server, self._local_address = start_server(spec, checkpoint_dir=checkpoint_dir)

    def address(self) -> str:
        import ray

        return f"{ray.util.get_node_ip_address()}:{self.server.port}"

    def info(self) -> dict:
        from deepcrl.buffer.reverb_replay import table_info

        return table_info(self._local_address)

    def checkpoint(self) -> str:
        from deepcrl.buffer.reverb_replay import checkpoint

        return checkpoint(self._local_address)

    def stop(self) -> None:
        self.server.stop()


def connect_ray(address: str):
    """Start an embedded local Ray, or join ``address``; unreachable → ConfigError."""
    import ray

    if ray.is_initialized():
        return ray
    env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}}
    if address:
        host = address.replace("ray://", "").rsplit(":", 1)
        if len(host) != 2 or not host[1].isdigit():
            raise ConfigError(f"ray_address must look like HOST:PORT (e.g. 127.0.0.1:6379), got {address!r}")
        import socket

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


def _options(num_gpus: float, concurrency: int = 1) -> dict:
    opts: dict = {"num_cpus": 1, "num_gpus": num_gpus, "max_concurrency": concurrency}
    if num_gpus:
        # Several roles may share a GPU: cap each process's JAX preallocation to its share.
        frac = min(0.95, 0.9 * num_gpus)
        opts["runtime_env"] = {"env_vars": {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{frac:.3f}"}}
    return opts


def summary_table(rows: list[dict]) -> str:
    cols = ["learner", "depth", "updates", "samples_drawn", "env_steps", "final_time_at_goal", "final_success"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_distributed(config: ConfigDict, run_dir: Path) -> dict:
    """Run a distributed topology to the end; returns the driving learner's summary row."""
    from deepcrl.collector.process import Collector
    from deepcrl.learner.process import Learner

    env = build_env(config)
    layout = validate(config, env)
    collector_role, learners = resolve_roles(config)
    names = [r.name for r in learners]
    spec = replay_spec(config, env, layout, names)
    ray = connect_ray(config.ray_address)
    run_dir = Path(run_dir).absolute()
    write_config(run_dir, config)
    started = time.time()
    gpus_l, gpus_c = float(config.gpus_per_learner), float(config.gpus_per_collector)

    replay = (
        ray.remote(ReplayService).options(**_options(0, concurrency=4)).remote(spec, str(run_dir / "replay"))
    )
    handles: dict[str, object] = {"replay": replay}
    try:
        address = ray.get(replay.address.remote())
        learner_handles = {}
        for role in learners:
            learner_handles[role.name] = (
                ray.remote(Learner)
                .options(**_options(gpus_l, concurrency=4))
                .remote(role.apply_to(config).to_dict(), role.name, names, address, str(run_dir))
            )
        handles.update(learner_handles)
        driver = learner_handles[learners[0].name]
        fetch = lambda have: ray.get(driver.get_actor_params.remote(have))
        collector = (
            ray.remote(Collector)
            .options(**_options(gpus_c, concurrency=2))
            .remote(collector_role.apply_to(config).to_dict(), names, address, str(run_dir), fetch)
        )
        handles["collector"] = collector
        _wait_ready(ray, handles)

        eval_every = max(1, layout.collections_per_epoch)
        running = {collector.run.remote(): "collector"}
        running.update({h.run.remote(eval_every): n for n, h in learner_handles.items()})
        results = _supervise(ray, running, handles, config)
        replay_info = ray.get(replay.info.remote())
        ray.get(replay.checkpoint.remote())
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every role and writing final checkpoints", file=sys.stderr)
        results = _stop_all(ray, handles, running if "running" in locals() else {})
        replay_info = ray.get(replay.info.remote())
        ray.get(replay.checkpoint.remote())
    finally:
        for name in ("collector", *names, "replay"):
            if name in handles:
                ray.kill(handles[name], no_restart=True)
        if not config.ray_address:
            ray.shutdown()

    rows = []
    for role in learners:
        r = results.get(role.name)
        if isinstance(r, dict):
            rows.append({**r, "depth": f"{role.critic_depth}"})
    summary = {
        "topology": config.topology,
        "wall_time_s": time.time() - started,
        "collector": results.get("collector"),
        "learners": rows,
        "replay_tables": replay_info,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    table = summary_table(rows)
    (run_dir / "summary.md").write_text(f"# {config.topology} on {config.env}\n\n{table}\n")
    curves = {
        f"{r.name} (depth {r.critic_depth})": read_metrics(run_dir / r.name / "metrics.jsonl")
        for r in learners
    }
    plot_success(curves, run_dir / "success.png", title=f"{config.topology} — {config.env}")
    print(table)
    keys = {"eval/success": "final_success", "eval/time_at_goal": "final_time_at_goal"}
    keys["eval/time_at_goal_frac"] = "final_time_at_goal_frac"
    return {k: rows[0].get(v) for k, v in keys.items()} if rows else {}


def _wait_ready(ray, handles: dict) -> None:
    """Construct every role now so a failing constructor is reported by name."""
    pending = {h.ready.remote(): n for n, h in handles.items() if n != "replay"}
    for ref, name in pending.items():
        try:
            ray.get(ref)
        except Exception as e:
            raise RoleFailed(f"role {name} failed to start: {_root_cause(e)}") from None


def _root_cause(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e.__cause__ or e
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def _supervise(ray, running: dict, handles: dict, config: ConfigDict) -> dict:
    """Wait for the collector; then stop the learners. Any role's death fails the run."""
    results: dict = {}
    deadline = time.time() + float(config.role_timeout_s) if config.role_timeout_s else None
    collector_done = False
    while running:
        done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        for ref in done:
            name = running.pop(ref)
            try:
                results[name] = ray.get(ref)
            except Exception as e:
                _stop_all(ray, handles, running, kill_collector=True)
                raise RoleFailed(f"role {name} died: {_root_cause(e)}") from None
            if name == "collector":
                collector_done = True
                for n, h in handles.items():
                    if n not in ("replay", "collector"):
                        h.stop.remote()
        if not collector_done and deadline and time.time() > deadline:
            _stop_all(ray, handles, running, kill_collector=True)
            raise RoleFailed(f"run exceeded role_timeout_s={config.role_timeout_s}")
    return results


def _stop_all(ray, handles: dict, running: dict, kill_collector: bool = False) -> dict:
    """Stop the collector first (learners keep draining the rate-limited tables meanwhile),
    then the learners, collecting what they return (final checkpoints included).

    After a role died its table is no longer drained, so the collector may be
    blocked on an insert for good: then it is killed instead of stopped.
    """
    results = {}
    refs = {name: ref for ref, name in running.items()}
    collector = handles.get("collector")
    if collector is not None:
        if kill_collector:
            ray.kill(collector, no_restart=True)
            refs.pop("collector", None)
        else:
            collector.stop.remote()
            if "collector" in refs:
                results["collector"] = _get_or_reason(ray, refs.pop("collector"))
    for name, h in handles.items():
        if name not in ("replay", "collector"):
            h.stop.remote()
    for name, ref in refs.items():
        results[name] = _get_or_reason(ray, ref)
    return results


def _get_or_reason(ray, ref, timeout: float = 300):
    try:
        return ray.get(ref, timeout=timeout)
    except Exception as e:
        return f"failed: {_root_cause(e)}"


__all__ = ["run_distributed", "RoleFailed", "Role", "connect_ray"]
