"""The learner role: sample segments from its Reverb table, relabel, update, evaluate, log.

A plain class (Ray makes it an actor in ``launch/distributed.py``). It runs
the very same relabeling and update functions as the fused ``single`` loop.
"""

from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from deepcrl.buffer.relabel import relabeled_minibatches
from deepcrl.collector.rollout import evaluate
from deepcrl.configs.resolve import (
    agent_config,
    build_env,
    make_eval_venv,
    replay_spec,
    segments_per_round,
    validate,
)
from deepcrl.learner.agent import make_agent
from deepcrl.rundir.checkpoints import save_train_state
from deepcrl.rundir.metrics import MetricsLog, write_config


class Learner:
    def __init__(self, config: dict, name: str, table_names: list[str], address: str, run_dir: str):
        from deepcrl.buffer.reverb_replay import SegmentSampler

        self.config = config = ConfigDict(config)
        self.name = name
        env = build_env(config)
        self.layout = layout = validate(config, env)
        self.spec = replay_spec(config, env, layout, table_names)
        self.address = address
        self.agent = agent = make_agent(agent_config(config, env))
        self.dir = Path(run_dir) / name
        write_config(self.dir, config)
        self.log = MetricsLog(self.dir)
        self.key, k_init = jax.random.split(
            jax.random.PRNGKey(config.seed + zlib.crc32(name.encode()) % 100_000)
        )
        self.train_state = agent.init(k_init)
        self.segments_per_round = segments_per_round(config, layout)
        self.sampler = SegmentSampler(address, name, self.segments_per_round, self.spec)
        eval_venv = make_eval_venv(config, env, layout)  # config.eval_env, or env itself
        goal_indices = env.spec.goal_indices

        def round_fn(ts, segments, key):
            k_relabel, k_update = jax.random.split(key)
            batches = relabeled_minibatches(
                k_relabel, segments, goal_indices, config.gamma, config.num_minibatches, config.batch_size
            )
            return agent.update_many(ts, batches, k_update)

        def eval_fn(actor, key):
            return evaluate(eval_venv, lambda obs, k: agent.act(actor, obs, deterministic=True), key)

        self._round = jax.jit(round_fn, donate_argnums=0)
        self._eval = jax.jit(eval_fn)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._published = (0, jax.device_get(self.train_state.actor))
        self.rounds = 0
        self.last_eval: dict = {}

    def ready(self) -> str:
        return self.name

    def get_actor_params(self, have_version: int = -1) -> tuple[int, object | None]:
        """(update count, actor params as numpy), or (count, None) if the caller has them already.

        Skipping unchanged parameters matters at depth 1024, where they weigh hundreds of MB.
        """
        with self._lock:
            version, params = self._published
        return (version, None) if version == have_version else (version, params)

    def stop(self) -> None:
        self._stop.set()

    def env_steps(self) -> int:
        """Env steps the collector has written into this learner's table."""
        from deepcrl.buffer.reverb_replay import table_info

        return table_info(self.address)[self.name]["num_inserts"] * self.layout.segment_length

    def _evaluate_and_log(self, extra: dict) -> dict:
        self.key, k = jax.random.split(self.key)
        metrics = self._eval(self.train_state.actor, k)
        row = {
            "updates": int(self.train_state.step),
            "rounds": self.rounds,
            "samples_drawn": self.sampler.items_sampled,
            "sample_wait_s": self.sampler.wait_s,
            **{f"eval/{k}": v for k, v in metrics.items()},
            **extra,
        }
        self.last_eval = self.log.write(self.env_steps(), row)
        return self.last_eval

    def run(self, eval_every_rounds: int) -> dict:
        """Train until ``stop()``; evaluate every ``eval_every_rounds`` rounds and at the end."""
        start = time.time()
        metrics: dict = {}
        self._evaluate_and_log({"wall_time": 0.0})
        try:
            while not self._stop.is_set():
                try:
                    batch = self.sampler.sample(timeout_s=0.5)
                except TimeoutError:  # table below min size or rate-limited: check for stop
                    continue
                segments = {k: jnp.asarray(v) for k, v in batch.data.items()}
                self.key, k = jax.random.split(self.key)
                self.train_state, metrics = self._round(self.train_state, segments, k)
                self.rounds += 1
                with self._lock:
                    self._published = (
                        self.rounds * self.config.num_minibatches,
                        jax.device_get(self.train_state.actor),
                    )
                if self.rounds % eval_every_rounds == 0:
                    self._evaluate_and_log({"wall_time": time.time() - start, **jax.device_get(metrics)})
                    if self.config.checkpoint:  # a killed run keeps its last evaluated agent
                        save_train_state(self.dir / "checkpoints" / "latest", self.train_state)
            return self.finish(time.time() - start, metrics)
        finally:
            self.sampler.close()
            self.log.close()

    def finish(self, wall_time: float, metrics: dict) -> dict:
        row = self._evaluate_and_log({"wall_time": wall_time, **jax.device_get(metrics)})
        if self.config.checkpoint:
            save_train_state(self.dir / "checkpoints" / "final", self.train_state)
        return {
            "learner": self.name,
            "updates": int(self.train_state.step),
            "samples_drawn": int(self.sampler.items_sampled),
            "final_success": float(row["eval/success"]),
            "final_time_at_goal": float(row["eval/time_at_goal"]),
            "final_time_at_goal_frac": float(row["eval/time_at_goal_frac"]),
            "env_steps": int(row["env_steps"]),
        }
