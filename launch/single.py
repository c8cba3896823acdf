"""Topology ``single``: acting, on-device replay and learning fused in one XLA program.

One jitted call runs a whole epoch — for each collection step: act, insert,
sample segments, relabel, and ``num_minibatches`` SGD steps — so the host only
wakes up to evaluate and log between epochs.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
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
from deepcrl.configs.resolve import Layout, agent_config, build_env, validate
from deepcrl.envs.base import State
from deepcrl.envs.wrappers import VectorEnv
from deepcrl.learner.agent import Agent, TrainState, make_agent
from deepcrl.rundir.checkpoints import restore_train_state, save_train_state
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


def make_single_trainer(config: ConfigDict) -> SingleTrainer:
    env = build_env(config)
    layout = validate(config, env)
    spec = env.spec
    venv = VectorEnv(env, config.num_envs, layout.episode_length)
    eval_venv = VectorEnv(env, config.num_eval_envs, layout.episode_length)
    agent = make_agent(agent_config(config, env))
    num_segments = segments_needed(config.num_minibatches * config.batch_size, layout.segment_length)
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

    def train_step(carry: Carry, _) -> tuple[Carry, dict]:
        carry, env_metrics = collect(carry)
        key, k_sample, k_relabel, k_update = jax.random.split(carry.key, 4)
        segments = sample_segments(carry.buffer, k_sample, num_segments, layout.segment_length)
        batches = relabeled_minibatches(
            k_relabel, segments, spec.goal_indices, config.gamma, config.num_minibatches, config.batch_size
        )
        train_state, metrics = agent.update_many(carry.train_state, batches, k_update)
        metrics["train/time_at_goal"] = env_metrics["success"].mean()
        metrics["train/distance"] = env_metrics["distance"].mean()
        metrics["relabel/mean_offset"] = batches["offset"].mean()
        return carry.replace(train_state=train_state, key=key), metrics

    def train_epoch(carry: Carry) -> tuple[Carry, dict]:
        carry, metrics = jax.lax.scan(train_step, carry, None, length=layout.collections_per_epoch)
        return carry, jax.tree_util.tree_map(jnp.mean, metrics)

    def evaluate_fn(carry: Carry, key: jax.Array) -> dict:
        return evaluate(eval_venv, policy_of(carry.train_state.actor, deterministic=True), key)

    return SingleTrainer(
        grid,
        agent,
        layout,
        jax.jit(init),
        jax.jit(prefill, donate_argnums=0),
        jax.jit(train_epoch, donate_argnums=0),
        jax.jit(evaluate_fn),
    )


class ProgressBar:
    """A one-line progress bar on stderr with env steps/s and the last success rate."""

    def __init__(self, total: int, stream=sys.stderr, width: int = 30):
        self.total, self.stream, self.width = total, stream, width
        self.start = time.time()

    def update(self, done: int, **fields) -> None:
        frac = min(done / max(self.total, 1), 1.0)
        filled = int(self.width * frac)
        rate = done / max(time.time() - self.start, 1e-9)
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done:,}/{self.total:,} steps {rate:,.0f} steps/s {extra}   ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def run_single(config: ConfigDict, run_dir: Path, progress: bool = True, resume: bool = False) -> dict:
    """Train, evaluate after every epoch, and write the run directory; returns the last eval row.

    After every epoch the agent is checkpointed to ``checkpoints/latest``; with
    ``resume`` a run continues from there (the replay buffer is not saved: it
    is refilled by the usual prefill, with the restored policy). A finished
    run writes ``checkpoints/final`` and ``complete.json``.
    """
    run_dir = Path(run_dir)
    trainer = make_single_trainer(config)
    layout = trainer.layout
    write_config(run_dir, config)
    key, k_init = jax.random.split(jax.random.PRNGKey(config.seed))
    carry = trainer.init(k_init)
    first_epoch, env_steps = 0, 0
    latest = run_dir / "checkpoints" / "latest"
    if resume and latest.exists():
        saved = restore_train_state(latest, _resume_state(carry, 0, 0, key))
        carry = carry.replace(train_state=saved["train_state"], coverage=saved["coverage"])
        first_epoch, env_steps, key = int(saved["epoch"]), int(saved["env_steps"]), saved["key"]
        truncate_metrics(run_dir, keep=lambda row: row.get("epoch", 0) <= first_epoch)
    else:
        truncate_metrics(run_dir, keep=lambda row: False)
    log = MetricsLog(run_dir)
    start = time.time()
    carry = trainer.prefill(carry)
    env_steps += layout.prefill_env_steps
    bar = ProgressBar(layout.total_env_steps) if progress else None
    row: dict = {}
    if first_epoch == 0:
        key, k_eval = jax.random.split(key)
        initial = trainer.evaluate(carry, k_eval)  # the untrained policy: the curve's baseline
        row = log.write(
            env_steps,
            {
                "epoch": 0,
                "updates": 0,
                **{f"eval/{k}": v for k, v in initial.items()},
                **coverage_metrics(carry.coverage, trainer.grid),
            },
        )
    try:
        for epoch in range(first_epoch, layout.num_epochs):
            carry, metrics = trainer.train_epoch(carry)
            env_steps += layout.collections_per_epoch * layout.steps_per_collection
            key, k_eval = jax.random.split(key)
            eval_metrics = trainer.evaluate(carry, k_eval)
            elapsed = time.time() - start
            if config.checkpoint:
                save_train_state(latest, _resume_state(carry, epoch + 1, env_steps, key))
            row = log.write(
                env_steps,
                {
                    "epoch": epoch + 1,
                    "updates": int(carry.train_state.step),
                    "wall_time": elapsed,
                    "env_steps_per_s": (env_steps - layout.prefill_env_steps) / elapsed,
                    **{f"eval/{k}": v for k, v in eval_metrics.items()},
                    **coverage_metrics(carry.coverage, trainer.grid),
                    **metrics,
                },
            )
            if bar:
                bar.update(env_steps, success=f"{row['eval/success']:.2f}")
    finally:
        if bar:
            bar.close()
        log.close()
        plot_success({config.env: read_metrics(log.jsonl_path)}, run_dir / "success.png", title=config.env)
    if config.checkpoint:
        save_train_state(run_dir / "checkpoints" / "final", carry.train_state)
    final = row or read_metrics(log.jsonl_path)[-1]
    (run_dir / "complete.json").write_text(json.dumps(final, indent=2) + "\n")
    return final


def _resume_state(carry: Carry, epoch: int, env_steps: int, key: jax.Array) -> dict:
    return {
        "train_state": carry.train_state,
        "coverage": carry.coverage,
        "epoch": jnp.asarray(epoch),
        "env_steps": jnp.asarray(env_steps, jnp.int64 if jax.config.jax_enable_x64 else jnp.int32),
        "key": key,
    }
