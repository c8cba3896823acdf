"""Topology ``single``: acting, on-device replay and learning fused in one XLA program.

One jitted call runs a whole epoch — for each collection step: act, insert,
sample segments, relabel, and ``num_minibatches`` SGD steps — so the host only
wakes up to evaluate and log between epochs.

With ``num_seeds = K > 1`` the same epoch is ``jax.vmap``-ed over K independent
seeds (agents, env batches, buffers, RNG streams stacked on a leading axis), so
K seeds run as one program instead of K runs. Seed ``s`` draws every key from
``PRNGKey(seed + s)`` exactly as a one-seed run with seed ``seed + s`` does:
the two compute the same function, and differ only by floating-point
reassociation of the batched kernels (close after an epoch; RL then amplifies
it, so longer runs are statistically, not bitwise, equivalent).

With ``num_devices = N`` (``learner/devices.py``) one seed's envs, replay buffer and minibatches are
split over N devices: each device steps ``num_envs / N`` envs, keeps their shard of the buffer and
samples ``batch_size / N`` transitions per SGD step from it; the update is the global-batch update
(InfoNCE negatives from the whole batch, gradients reduced over devices). K > 1 seeds are split instead:
K / N seeds per device, no collective.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from ml_collections import ConfigDict

from deepcrl.buffer.relabel import relabeled_minibatches, segments_needed
from deepcrl.buffer.trajectory_buffer import TrajectoryBuffer, init_buffer, insert, sample_segments
from deepcrl.collector.coverage import (
    CoverageGrid,
    coverage_metrics,
    grid_for,
    init_coverage,
    update_coverage,
)
from deepcrl.collector.rollout import evaluate, unroll
from deepcrl.configs.experiment import Experiment
from deepcrl.configs.validation import Layout
from deepcrl.envs.base import State
from deepcrl.launch.cli import STOP
from deepcrl.launch.progress import RunProgress
from deepcrl.learner import devices
from deepcrl.learner.agent import Agent, TrainState, make_agent
from deepcrl.rundir import provenance
from deepcrl.rundir.checkpoints import (
    CheckpointError,
    previous,
    resolve,
    restore_train_state,
    save_train_state,
)
from deepcrl.rundir.layout import NETWORK_FIELDS, relative, write_summary
from deepcrl.rundir.metrics import MetricsLog, read_metrics, truncate_metrics, write_config
from deepcrl.rundir.plots import plot_success


@struct.dataclass
class Carry:
    train_state: TrainState
    env_state: State
    buffer: TrajectoryBuffer
    coverage: dict
    key: jax.Array


class SingleTrainer(NamedTuple):
    grid: CoverageGrid
    agent: Agent
    layout: Layout
    init: Callable[[jax.Array], Carry]
    prefill: Callable[[Carry], Carry]
    train_epoch: Callable[[Carry], tuple[Carry, dict]]
    evaluate: Callable[[Carry, jax.Array], dict]
    place: Callable[[Carry], Carry]  # onto the devices, split as the epoch functions expect


def make_single_trainer(experiment: Experiment) -> SingleTrainer:
    """Jitted epoch functions for one seed, or for ``num_seeds`` seeds stacked and vmapped.

    With one seed the carry has no seed axis (the program is the plain one-seed
    program); with K > 1 every leaf of the carry, every key and every metric has
    a leading axis of size K, and ``init`` takes ``[K, 2]`` keys. Over N devices,
    one seed's env axis (env state, buffer, minibatches) is split, or K seeds' seed axis.
    """
    config, layout, env = experiment.config, experiment.layout, experiment.env()
    spec = env.spec
    venv = experiment.train_venv()
    eval_venv = experiment.eval_venv()  # config.eval_env, or env itself
    agent = make_agent(experiment.agent)
    many = experiment.num_seeds > 1
    mesh = devices.make_mesh(experiment.num_devices)
    share = 1 if many else experiment.num_devices  # one seed's envs and batches, split N ways
    grid = grid_for(env)

    def policy_of(actor, deterministic=False):
        return lambda obs, key: agent.act(actor, obs, key, deterministic=deterministic)

    def init(key: jax.Array) -> Carry:
        k_agent, k_env, k_run = jax.random.split(key, 3)
        buf = init_buffer(config.replay_steps_per_env, config.num_envs, spec.state_size, env.action_size)
        coverage = init_coverage(grid, spec.goal_size)
        return Carry(agent.init(k_agent), venv.reset(k_env), buf, coverage, k_run)

    def collect(carry: Carry) -> tuple[Carry, dict]:
        key, k_act = jax.random.split(carry.key)
        env_state, steps, metrics = unroll(
            venv, policy_of(carry.train_state.actor), carry.env_state, k_act, config.unroll_length
        )
        coverage = update_coverage(carry.coverage, spec.goal_of(steps["state"]), grid)
        return carry.replace(
            env_state=env_state, buffer=insert(carry.buffer, steps), coverage=coverage, key=key
        ), metrics

    def prefill(carry: Carry) -> Carry:
        """Fill the buffer with the initial policy's experience before any update."""

        def body(c, _):
            return collect(c)[0], None

        return jax.lax.scan(body, carry, None, length=layout.prefill_unrolls)[0]

    draw = _sampler(experiment, mesh, share)

    def train_step(carry: Carry, _) -> tuple[Carry, dict]:
        carry, env_metrics = collect(carry)
        key, k_sample, k_relabel, k_update = jax.random.split(carry.key, 4)
        batches = draw(carry.buffer, k_sample, k_relabel)
        train_state, metrics = agent.update_many(carry.train_state, batches, k_update)
        metrics["train/time_at_goal_frac"] = env_metrics["success"].mean()
        metrics["train/distance"] = env_metrics["distance"].mean()
        metrics["relabel/mean_offset"] = batches["offset"].mean()
        return carry.replace(train_state=train_state, key=key), metrics

    def train_epoch(carry: Carry) -> tuple[Carry, dict]:
        carry, metrics = jax.lax.scan(train_step, carry, None, length=layout.collections_per_epoch)
        return carry, jax.tree_util.tree_map(jnp.mean, metrics)

    def evaluate_fn(carry: Carry, key: jax.Array) -> dict:
        return evaluate(eval_venv, policy_of(carry.train_state.actor, deterministic=True), key)

    over = jax.vmap if many else (lambda f: f)
    keys = jax.ShapeDtypeStruct((experiment.num_seeds, 2) if many else (2,), jnp.uint32)
    split = _carry_shardings(mesh, jax.eval_shape(over(init), keys), many, int(config.num_envs))
    placed = functools.partial(_placed, split=split)
    return SingleTrainer(
        grid,
        agent,
        layout,
        jax.jit(placed(over(init))),
        jax.jit(placed(over(prefill)), donate_argnums=0),
        jax.jit(placed(over(train_epoch)), donate_argnums=0),
        jax.jit(over(evaluate_fn)),
        lambda carry: devices.put(carry, split),
    )


def _sampler(experiment: Experiment, mesh, share: int) -> Callable:
    """``draw(buffer, k_sample, k_relabel) -> minibatches``: segments sampled and relabeled. Split over
    ``share`` devices (one seed over N), each device draws its ``B/N`` rows of every minibatch from its
    own shard of the buffer (no buffer crosses devices); the minibatches come out split along the batch
    axis. With K seeds (``share`` 1) a plain function, vmapped with the rest."""
    config, layout, goal_indices = experiment.config, experiment.layout, experiment.env().spec.goal_indices
    batch = int(config.batch_size) // share
    num_segments = segments_needed(int(config.num_minibatches) * batch, layout.segment_length)

    def draw(buffer: TrajectoryBuffer, k_sample: jax.Array, k_relabel: jax.Array) -> dict:
        k_sample, k_relabel = devices.device_key(k_sample, share), devices.device_key(k_relabel, share)
        segments = sample_segments(buffer, k_sample, num_segments, layout.segment_length)
        return relabeled_minibatches(k_relabel, segments, goal_indices, config.gamma, config.num_minibatches, batch)

    if experiment.num_seeds > 1:
        return draw
    on_envs = TrajectoryBuffer({k: devices.spec(1) for k in ("state", "action", "episode_id")}, devices.spec(None),
                               devices.spec(None))  # fmt: skip
    return devices.per_device(draw, mesh, (on_envs, devices.spec(None), devices.spec(None)), devices.spec(1))


def _placed(fn: Callable, split) -> Callable:
    """``fn`` whose carry comes out split as ``split`` says (a constraint XLA's partitioner keeps)."""

    def constrained(*args):
        out = fn(*args)
        if isinstance(out, tuple):
            return (jax.lax.with_sharding_constraint(out[0], split), *out[1:])
        return jax.lax.with_sharding_constraint(out, split)

    return constrained


def _carry_shardings(mesh, carry: Carry, many: bool, num_envs: int) -> Carry:
    """K seeds: every leaf split along its seed axis. One seed: envs and the buffer split along the env
    axis; the agent, the coverage counts and the key replicated."""
    if many:
        return devices.tree_shardings(mesh, carry, 0)
    buf = carry.buffer
    return Carry(
        train_state=devices.tree_shardings(mesh, carry.train_state, None),
        env_state=devices.tree_shardings(mesh, carry.env_state, 0, size=num_envs),
        buffer=TrajectoryBuffer(devices.tree_shardings(mesh, buf.data, 1), devices.sharding(mesh, None),
                                devices.sharding(mesh, None)),  # fmt: skip
        coverage=devices.tree_shardings(mesh, carry.coverage, None),
        key=devices.sharding(mesh, None),
    )


def run_single(
    experiment: Experiment,
    run_dir: Path,
    progress: bool = True,
    resume: bool = False,
    seed_dirs: list[Path] | None = None,
) -> dict:
    """Train, evaluate after every epoch, and write the run directory; returns the last eval row.

    After every epoch the agent is checkpointed to ``checkpoints/latest``; with
    ``resume`` a run continues from there, or from ``checkpoints/latest.old`` (the one before) if the
    latest is damaged (the replay buffer is not saved: the usual prefill refills it with the restored
    policy, uncounted, so rows sit where an uninterrupted run's do; wall_time goes on, env_steps_per_s
    counts this session). A finished run writes ``checkpoints/final`` and ``complete.json``.

    With ``num_seeds = K > 1``, ``seed_{s}/`` holds what a one-seed run with
    seed ``seed + s`` writes (config.json, metrics, complete.json,
    checkpoints/final); the run directory's own metrics.jsonl / complete.json
    hold the mean over seeds of every field, and returns that mean row. All
    seeds' resume state is one checkpoint, ``checkpoints_all_seeds/latest``
    (one save, so a killed run never leaves seeds at different epochs).
    ``seed_dirs`` puts seed s's folder elsewhere (a study: each seed's own run directory).
    """
    run_dir, config = Path(run_dir), experiment.config
    trainer, layout, num_seeds = make_single_trainer(experiment), experiment.layout, experiment.num_seeds
    many = num_seeds > 1
    seed_dirs = _seed_dirs(run_dir, seed_dirs, num_seeds)
    key, k_init = _split(run_keys(config.seed, num_seeds), many)
    carry = trainer.init(k_init)
    latest = run_dir / ("checkpoints_all_seeds" if many else "checkpoints") / "latest"
    saved = _restore(latest, run_dir, _resume_state(carry, 0, 0, key)) if resume else None
    _write_records(experiment, run_dir, seed_dirs)  # after the restore: a CheckpointError leaves the run as it was
    if saved is not None:  # placed on the devices as the epoch functions expect
        carry, key = trainer.place(carry.replace(train_state=saved["train_state"], coverage=saved["coverage"])), saved["key"]
    first_epoch, env_steps, wall_before = _continue_from(saved, run_dir, seed_dirs)
    logs = SeedLogs(run_dir, seed_dirs)

    start = time.time()
    carry = trainer.prefill(carry)
    if saved is None:  # a resumed run's refill is not counted: its saved env_steps hold the prefill once
        env_steps += layout.prefill_env_steps
    session_start = env_steps  # rates count this session's training steps only
    total, done = layout.total_env_steps * num_seeds, env_steps * num_seeds
    bar = RunProgress({"single": total}, done={"single": done}) if progress else None
    row: dict = {}
    if first_epoch == 0:
        key, k_eval = _split(key, many)
        initial = trainer.evaluate(carry, k_eval)  # the untrained policy: the curve's baseline
        coverage = _coverage(carry.coverage, trainer.grid, num_seeds)
        row = logs.write(env_steps, {"epoch": 0, "updates": 0, **_prefixed(initial), **coverage})
    try:
        for epoch in range(first_epoch, layout.num_epochs):
            STOP.check()  # a Ctrl-C or SIGTERM whose KeyboardInterrupt was lost (launch/cli.py)
            carry, metrics = trainer.train_epoch(carry)
            env_steps += layout.collections_per_epoch * layout.steps_per_collection
            key, k_eval = _split(key, many)
            eval_metrics = trainer.evaluate(carry, k_eval)
            elapsed = time.time() - start
            if config.checkpoint:
                save_train_state(latest, _resume_state(carry, epoch + 1, env_steps, key))
            row = logs.write(
                env_steps,
                {
                    "epoch": epoch + 1,
                    "updates": carry.train_state.step if many else int(carry.train_state.step),
                    "wall_time": wall_before + elapsed,  # continues across a resume
                    "env_steps_per_s": (env_steps - session_start) / elapsed,
                    **_prefixed(eval_metrics),
                    **_coverage(carry.coverage, trainer.grid, num_seeds),
                    **metrics,
                },
            )
            if bar:
                bar.update("single", env_steps * num_seeds, row)
    finally:
        if bar:
            bar.close()
        logs.close(title=config.env)
    return _finish(config, carry, logs, row)


def _write_records(experiment: Experiment, run_dir: Path, seed_dirs: list[Path]) -> None:
    """config.json (the run's, each seed's) and this session's provenance."""
    write_config(run_dir, experiment.record())
    for s, folder in enumerate(seed_dirs):
        write_config(folder, _seed_config(experiment.record(), s))
    provenance.write(run_dir, provenance.collect(jax.local_devices()[: experiment.num_devices]))


def _continue_from(saved: dict | None, run_dir: Path, seed_dirs: list[Path]) -> tuple[int, int, float]:
    """(epoch, env steps, wall time) the run goes on from; the rows after the restored epoch are
    dropped (all rows when nothing was restored: the run starts afresh)."""
    first_epoch = int(saved["epoch"]) if saved is not None else 0
    for folder in [run_dir, *seed_dirs]:
        truncate_metrics(folder, keep=lambda row: saved is not None and row.get("epoch", 0) <= first_epoch)
    if saved is None:
        return 0, 0, 0.0
    walls = [r.get("wall_time", 0.0) for r in read_metrics(run_dir / "metrics.jsonl")]
    return first_epoch, int(saved["env_steps"]), max(walls, default=0.0)  # wall_time continues


def _seed_dirs(run_dir: Path, seed_dirs: list[Path] | None, num_seeds: int) -> list[Path]:
    """Each seed's folder (none for one seed): ``seed_dirs``, or ``seed_{s}/`` in the run directory."""
    if seed_dirs is not None and len(seed_dirs) != num_seeds:
        raise ValueError(f"{len(seed_dirs)} seed_dirs for num_seeds={num_seeds}")
    if num_seeds == 1:
        return []
    return [Path(d) for d in seed_dirs or [run_dir / f"seed_{s}" for s in range(num_seeds)]]


class SeedLogs:
    """The metrics of a run: one log (one seed), or one per seed (``seed_{s}/``) and their mean."""

    def __init__(self, run_dir: Path, seed_dirs: list[Path]):
        self.run_dir, self.seed_dirs = run_dir, seed_dirs
        self.log = MetricsLog(run_dir)
        self.seed_logs = [MetricsLog(folder) for folder in seed_dirs]

    def write(self, env_steps: int, fields: dict) -> dict:
        """One row per seed and their mean (the run directory); one seed: one row."""
        if not self.seed_logs:
            return self.log.write(env_steps, fields)
        host = dict(zip(fields, jax.device_get(list(fields.values())), strict=True))  # keeps the order
        rows = [
            seed_log.write(
                env_steps, {k: np.asarray(v)[s].item() if np.ndim(v) else v for k, v in host.items()}
            )
            for s, seed_log in enumerate(self.seed_logs)
        ]
        return self.log.write(env_steps, {**_mean_row(rows), "num_seeds": len(rows)})

    def close(self, title: str) -> None:
        """Plot the curves, then close the logs (a wandb run uploads the folder's plots when it closes)."""
        curves = {f"seed {s}": read_metrics(sl.jsonl_path) for s, sl in enumerate(self.seed_logs)}
        curves = {**curves, ("mean" if self.seed_logs else title): read_metrics(self.log.jsonl_path)}
        plot_success(curves, self.run_dir / "success.png", title=title)
        for log in (self.log, *self.seed_logs):
            log.close()


def _prefixed(eval_metrics: dict) -> dict:
    return {f"eval/{k}": v for k, v in eval_metrics.items()}


def _finish(config, carry: Carry, logs: SeedLogs, row: dict) -> dict:
    """Final checkpoints, ``complete.json`` and the summary (per seed, and the run's); the run's final row."""
    seeds = []
    for s, folder in enumerate(logs.seed_dirs):
        if config.checkpoint:
            save_train_state(folder / "checkpoints" / "final", _pick(carry.train_state, s))
        seeds.append(read_metrics(logs.seed_logs[s].jsonl_path)[-1])
        _write_json(folder / "complete.json", seeds[-1])
        _summarise(config, folder, [(folder, int(config.seed) + s, seeds[-1])])
    if config.checkpoint and not logs.seed_dirs:
        save_train_state(logs.run_dir / "checkpoints" / "final", carry.train_state)
    final = row or read_metrics(logs.log.jsonl_path)[-1]
    _write_json(logs.run_dir / "complete.json", final)
    learners = [(f, int(config.seed) + s, r) for s, (f, r) in enumerate(zip(logs.seed_dirs, seeds, strict=True))]
    _summarise(config, logs.run_dir, learners or [(logs.run_dir, int(config.seed), final)],
               mean=final if seeds else None)  # fmt: skip
    return final


def _summarise(config, run_dir: Path, learners: list[tuple[Path, int, dict]], mean: dict | None = None) -> None:
    """The summary every topology writes (rundir/layout.py): a row per seed's agent, naming its folder."""
    fields = ("updates", "env_steps", "eval/time_at_goal", "eval/time_at_goal_frac", "eval/success", "epoch")
    shape = {k: int(config[k]) for k in NETWORK_FIELDS}
    rows = [
        {"learner": "single", "seed": seed, "depth": str(config.critic_depth), "folder": relative(folder, run_dir),
         **shape, **{k: final.get(k) for k in fields if k in final}}
        for folder, seed, final in learners
    ]  # fmt: skip
    last = mean or learners[0][2]
    summary = {
        "topology": "single", "env": config.env, "tag": config.get("tag", ""), "notes": config.get("notes", ""),
        "wall_time_s": last.get("wall_time"), "collector": {k: v for k, v in last.items() if k.startswith("coverage/")},
        "learners": rows, **({"mean_over_seeds": mean} if mean else {}),
    }  # fmt: skip
    write_summary(run_dir, summary, f"single on {config.env}")


def run_keys(seed: int, num_seeds: int = 1) -> jax.Array:
    """A run's key; with K seeds, ``[K, 2]``: seed s's is the key of a one-seed run with ``seed + s``."""
    if num_seeds == 1:
        return jax.random.PRNGKey(seed)
    return jnp.stack([jax.random.PRNGKey(seed + s) for s in range(num_seeds)])


def _split(key: jax.Array, many: bool) -> tuple[jax.Array, jax.Array]:
    """``jax.random.split(key)`` per seed."""
    pair = jax.vmap(jax.random.split)(key) if many else jax.random.split(key)
    return (pair[:, 0], pair[:, 1]) if many else (pair[0], pair[1])


def _seed_config(config: ConfigDict, s: int) -> ConfigDict:
    """What seed ``s`` of a K-seed run is: a one-seed run with ``seed + s``."""
    one = ConfigDict(config.to_dict())
    one.seed = int(config.seed) + s
    one.num_seeds = 1
    return one


def _pick(tree, s: int):
    """Seed ``s``'s slice of a pytree stacked over seeds (scalars shared by all seeds pass through)."""
    return jax.tree_util.tree_map(lambda x: x[s] if np.ndim(x) > 0 else x, tree)


def _coverage(coverage: dict, grid: CoverageGrid, num_seeds: int) -> dict:
    if num_seeds == 1:
        return coverage_metrics(coverage, grid)
    host = jax.device_get(coverage)
    per_seed = [coverage_metrics(_pick(host, s), grid) for s in range(num_seeds)]
    return {k: np.asarray([m[k] for m in per_seed]) for k in per_seed[0]}


def _mean_row(rows: list[dict]) -> dict:
    """The mean over seeds of every numeric field (fields equal in all seeds are kept as they are)."""
    mean = {}
    for k in rows[0]:
        if k == "env_steps":
            continue
        values = [r.get(k) for r in rows]
        if all(v == values[0] for v in values):
            mean[k] = values[0]
        elif all(isinstance(v, (int, float)) for v in values):
            mean[k] = float(np.mean(values))
        else:  # a non-finite value (written as a string) in some seed
            mean[k] = float("nan")
    return mean


def _write_json(path: Path, row: dict) -> None:
    path.write_text(json.dumps(row, indent=2) + "\n")


def _restore(latest: Path, run_dir: Path, target: dict) -> dict | None:
    """The resume state saved at ``latest`` (else its previous one, with a ``warning:`` line), or None
    when the run has nothing to resume (never started, or killed before its first checkpoint).

    Writes nothing. Raises ``CheckpointError`` when no checkpoint restores, and when there is none
    while the run's metrics show progress (rows after the untrained policy's): never a silent restart.
    """
    if resolve(latest) is None:
        done = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("epoch", 0) > 0]
        if done:
            raise CheckpointError(
                f"{run_dir} trained {done[-1]['epoch']} epoch(s) (metrics.jsonl) but has no checkpoint at "
                f"{latest} (nor {previous(latest).name}); not starting it over: start a new --run_dir"
            )
        return None
    return restore_train_state(latest, target)


def _resume_state(carry: Carry, epoch: int, env_steps: int, key: jax.Array) -> dict:
    return {
        "train_state": carry.train_state,
        "coverage": carry.coverage,
        "epoch": jnp.asarray(epoch),
        "env_steps": jnp.asarray(env_steps, jnp.int64 if jax.config.jax_enable_x64 else jnp.int32),
        "key": key,
    }
