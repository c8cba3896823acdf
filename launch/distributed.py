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

import sys
import time
from pathlib import Path

import jax
import ray

from deepcrl.configs.budget import check_nodes
from deepcrl.configs.experiment import Experiment
from deepcrl.configs.topologies import RoleSpec
from deepcrl.configs.validation import ConfigError
from deepcrl.launch.cli import STOP, Interrupted, RoleFailed
from deepcrl.launch.cluster import check_resources, connect
from deepcrl.launch.elastic import load_record, with_attached
from deepcrl.launch.progress import RoleWatcher
from deepcrl.launch.supervise import Supervisor
from deepcrl.rundir import provenance
from deepcrl.rundir.layout import NETWORK_FIELDS, write_summary
from deepcrl.rundir.metrics import publish_to_wandb, read_metrics, write_config
from deepcrl.rundir.plots import plot_success


def data_held(experiment: Experiment, replay_info: dict) -> dict:
    """For ``learners_from_replay``: how much data the checkpoint held (the table every learner
    samples), and how much its collector had written in all."""
    c = experiment.config
    table = replay_info.get(str(c.get("from_table", "")))
    if experiment.collector is not None or not table:
        return {}
    seg = experiment.layout.segment_length
    held, written = table["size"] * seg, table["num_inserts"] * seg
    line = (f"data: {held:,} env steps held by the replay checkpoint of {c.from_run} (the last of the "
            f"{written:,} its collector wrote), {table['size']:,} segments of {seg} steps")  # fmt: skip
    return {"from_run": c.from_run, "env_steps_held": held, "env_steps_written": written, "line": line}


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


def learner_rows(sup: Supervisor, results: dict, run_dir: Path) -> tuple[list[RoleSpec], list[dict]]:
    """Every learner the run had (those detached from it included) and its summary row."""
    rows = []
    detached = {r["name"]: r for r in load_record(run_dir)["detached"]}
    learners = [*sup.experiment.learners, *(s for s in sup.detached if s.name not in detached)]
    learners += [RoleSpec(**{k: v for k, v in r.items() if k != "result"}) for r in detached.values()]
    for role in learners:
        r = results.get(role.name, detached.get(role.name, {}).get("result"))
        if isinstance(r, dict):
            shape = {k: getattr(role, k) for k in NETWORK_FIELDS}
            rows.append({**r, "depth": f"{role.critic_depth}", "joined_at_env_steps": max(0, role.joined_at),
                         "folder": role.name, **shape})  # fmt: skip
    return learners, rows


def _mark_short(sup: Supervisor, rows: list[dict]) -> None:
    """Name a learner that ended short of `single`'s updates: exact unless it lost more samples to
    restarts (its table drained while it was down) than the rate limiter's slack grants again."""
    total = sup.experiment.layout.total_env_steps
    current = {r.name for r in sup.experiment.learners} - sup.dropped  # not detached, not dropped
    for r in rows:
        if not sup.interrupted and r.get("env_steps", total) < total and r.get("learner") in current:
            r["short_of_single"] = True
            print(f"note: learner {r['learner']} ended at {r['env_steps']:,} of {total:,} env steps: samples "
                  "it lost to restarts were not granted again", file=sys.stderr)  # fmt: skip


def run_distributed(experiment: Experiment, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Run a distributed topology to the end; returns the driving learner's summary row.

    With ``resume`` every role continues from its checkpoint in ``run_dir`` (the
    replay from its latest Reverb checkpoint): a run whose driver died goes on.
    """
    if resume:  # the learners attached to it before, and the detached ones' results
        experiment = with_attached(experiment, run_dir)
    config, names = experiment.config, experiment.learner_names
    connect(config.ray_address)
    STOP.install()  # ray.init replaces the SIGTERM handler: a scheduler's preemption stops the run as Ctrl-C does
    try:
        check_resources(ray.cluster_resources(), experiment)
        if config.ray_address:  # roles run on the cluster's nodes: the largest must fit on one
            check_nodes(experiment.memory, ray.nodes())
    except ConfigError:
        if not config.ray_address:
            ray.shutdown()
        raise
    run_dir = Path(run_dir).absolute()
    write_config(run_dir, experiment.record())
    provenance.write(run_dir, provenance.collect(jax.local_devices()[:1]))  # this session's code and stack
    started = time.time()
    sup = Supervisor(ray, experiment, run_dir, resume=resume)
    total = experiment.layout.total_env_steps
    roles = ["collector", *names] if experiment.collector is not None else names
    watcher = RoleWatcher(run_dir, roles, total) if progress else None
    if watcher is not None:
        sup.elastic.on_new_learner = watcher.add
    try:
        results, replay_info = sup.run()
    finally:
        if watcher is not None:
            watcher.close()
        sup.shutdown()
        if not config.ray_address:
            ray.shutdown()

    learners, rows = learner_rows(sup, results, run_dir)
    _mark_short(sup, rows)
    collector = results.get("collector")
    if isinstance(collector, dict) and replay_info:
        # Every segment handed to the writer is in the tables' insert counts, unless a failure lost it.
        inserted = replay_info[names[0]]["num_inserts"]
        collector["segments_lost"] = max(0, collector["segments_written"] - inserted)
    data = data_held(experiment, replay_info)
    summary = {
        "topology": config.topology,
        "env": config.env,
        "tag": config.get("tag", ""),
        "notes": config.get("notes", ""),
        **({"data": data} if data else {}),
        "wall_time_s": time.time() - started,
        "collector": collector,
        "learners": rows,
        "replay_tables": replay_info,
        "roles": sup.roles.roles,
    }
    roles = roles_table(sup.roles.roles, collector)
    note = f"{data['line']}\n\n" if data else ""
    table = write_summary(run_dir, summary, f"{config.topology} on {config.env}", before=note, after=f"\n{roles}\n")
    curves = {
        f"{r.name} (depth {r.critic_depth}{f', joined at {r.joined_at:,}' if r.joined_at >= 0 else ''})":
        read_metrics(run_dir / r.name / "metrics.jsonl")
        for r in learners
    }
    plot_success(curves, run_dir / "success.png", title=f"{config.topology} — {config.env}")
    publish_to_wandb(run_dir, "driver", {"wall_time_s": summary["wall_time_s"], **(rows[0] if rows else {})})
    if data:
        print(data["line"])
    print(table)
    troubled = [n for n, r in sup.roles.roles.items() if r["restarts"] or r["status"] not in ("finished", "stopped", "detached")]
    print(roles if troubled else f"all {len(sup.roles.roles)} roles ran without a restart (roles.json, summary.md)")
    if sup.interrupted:  # after the summary: what the run did before the stop is recorded
        raise Interrupted("stopped by Ctrl-C or SIGTERM")
    if not rows:
        return {}
    who = "the collector's learner" if experiment.collector is not None else f"trained on {config.from_run}'s data"
    return {**rows[0], "who": who}  # the driving learner's (its name and depth included)


__all__ = ["run_distributed", "RoleFailed"]
