"""The collector role: act in N envs with its learner's latest policy, write segments to Reverb.

Acting runs on the collector's device; finished segments go to a background
writer thread, so the acting loop only waits when the replay service pushes
back (rate limiter) — and that wait is counted. Parameters are fetched every
``params_fetch_every`` collection steps, which bounds their staleness.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

from deepcrl.collector.coverage import coverage_metrics, grid_for, init_coverage, update_coverage
from deepcrl.collector.rollout import unroll
from deepcrl.configs.resolve import agent_config, build_env, make_train_venv, replay_spec, validate
from deepcrl.learner.agent import make_agent
from deepcrl.rundir.metrics import MetricsLog

# (version the caller holds) -> (learner update count, actor params or None if unchanged)
FetchParams = Callable[[int], tuple[int, object | None]]


class SegmentAssembler:
    """Cuts time-major unrolls [U, N, ...] into batch-major segments [N, L, ...] of fixed length L."""

    def __init__(self, segment_length: int):
        self.length = segment_length
        self._chunks: list[dict[str, np.ndarray]] = []
        self._held = 0

    def add(self, steps: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        self._chunks.append(steps)
        self._held += steps["episode_id"].shape[0]
        out = []
        while self._held >= self.length:
            joined = {k: np.concatenate([c[k] for c in self._chunks]) for k in steps}
            out.append(
                {k: np.ascontiguousarray(np.swapaxes(v[: self.length], 0, 1)) for k, v in joined.items()}
            )
            rest = {k: v[self.length :] for k, v in joined.items()}
            self._held -= self.length
            self._chunks = [rest] if self._held else []
        return out


class Collector:
    def __init__(
        self,
        config: dict,
        table_names: list[str],
        address: str,
        run_dir: str,
        fetch_params: FetchParams,
        sink=None,
    ):
        from deepcrl.buffer.reverb_replay import AsyncSegmentWriter, SegmentWriter

        self.config = config = ConfigDict(config)
        env = build_env(config)
        self.layout = layout = validate(config, env)
        self.spec = replay_spec(config, env, layout, table_names)
        self.venv = make_train_venv(config, env, layout)  # with the config's reset rule
        self.agent = agent = make_agent(agent_config(config, env))
        self.fetch_params = fetch_params
        # Reverb 0.14 logs a warning per item from ~50 unconfirmed items on; stay below that.
        sink = sink or SegmentWriter(address, self.spec, max_in_flight_items=32)
        self.writer = AsyncSegmentWriter(sink, queue_size=config.writer_queue)
        self.log = MetricsLog(Path(run_dir) / "collector")
        k_init, self.key = jax.random.split(jax.random.PRNGKey(config.seed))
        # The untrained policy acts until the learner publishes its first parameters.
        self.version, self.actor = 0, agent.init(k_init).actor
        self._stop = threading.Event()

        self.grid = grid = grid_for(env)
        self.coverage = init_coverage(grid, env.spec.goal_size)

        def act_unroll(actor, env_state, coverage, key):
            policy = lambda obs, k: agent.act(actor, obs, k)
            env_state, steps, metrics = unroll(self.venv, policy, env_state, key, config.unroll_length)
            coverage = update_coverage(coverage, env.spec.goal_of(steps["state"]), grid)
            return env_state, steps, metrics, coverage

        self._unroll = jax.jit(act_unroll)
        self.versions_seen: list[int] = []
        self.max_steps_between_fetches = 0
        self.segments_written = 0

    def ready(self) -> bool:
        return True

    def policy_actions(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions of the parameters the collector acts with now."""
        return np.asarray(self.agent.act(self.actor, jax.numpy.asarray(obs), deterministic=True))

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> dict:
        """Collect until ``total_env_steps`` (or ``stop()``); returns the collector's counters."""
        cfg = self.config
        k_reset, self.key = jax.random.split(self.key)
        env_state = jax.jit(self.venv.reset)(k_reset)
        assembler = SegmentAssembler(self.layout.segment_length)
        env_steps, collections, since_fetch, acting_s = 0, 0, 0, 0.0
        log_every = max(1, self.layout.collections_per_epoch)
        start = time.time()
        success, lag = [], 0
        try:
            while env_steps < cfg.total_env_steps and not self._stop.is_set():
                if since_fetch >= cfg.params_fetch_every:
                    new_version, new_actor = self.fetch_params(self.version)
                    lag = new_version - self.version  # learner updates the old parameters were behind
                    if new_actor is not None:
                        self.version, self.actor = new_version, new_actor
                    self.versions_seen.append(self.version)
                    since_fetch = 0
                t0 = time.time()
                self.key, k = jax.random.split(self.key)
                env_state, steps, metrics, self.coverage = self._unroll(
                    self.actor, env_state, self.coverage, k
                )
                steps = jax.device_get(steps)
                acting_s += time.time() - t0
                for segment in assembler.add(steps):
                    self.writer.put(segment)
                    self.segments_written += segment["episode_id"].shape[0]
                success.append(float(metrics["success"].mean()))
                env_steps += cfg.num_envs * cfg.unroll_length
                collections += 1
                since_fetch += 1
                self.max_steps_between_fetches = max(self.max_steps_between_fetches, since_fetch)
                if collections % log_every == 0:
                    self._log(env_steps, start, acting_s, lag, success)
                    success = []
        finally:
            self.writer.close()
            self._log(env_steps, start, acting_s, lag, success)
            self.log.close()
        return {
            "env_steps": env_steps,
            "segments_written": self.segments_written,
            "steps_written": self.segments_written * self.layout.segment_length,
            "params_fetches": len(self.versions_seen),
            "params_distinct_versions": len(set(self.versions_seen)),
            "params_last_version": self.version,
            "max_collections_between_fetches": self.max_steps_between_fetches,
            "writer_blocked_puts": self.writer.puts_blocked,
            "writer_blocked_s": self.writer.put_blocked_s,
            "wall_time": time.time() - start,
            **coverage_metrics(self.coverage, self.grid),
        }

    def _log(self, env_steps, start, acting_s, lag, success) -> None:
        elapsed = max(time.time() - start, 1e-9)
        self.log.write(
            env_steps,
            {
                "wall_time": elapsed,
                "env_steps_per_s": env_steps / elapsed,
                "acting_env_steps_per_s": env_steps / max(acting_s, 1e-9),
                "segments_written": self.segments_written,
                "params_version": self.version,
                "params_lag_updates": lag,
                "writer_blocked_puts": self.writer.puts_blocked,
                "writer_blocked_s": self.writer.put_blocked_s,
                "train/time_at_goal": float(np.mean(success)) if success else 0.0,
                **coverage_metrics(self.coverage, self.grid),
            },
        )
