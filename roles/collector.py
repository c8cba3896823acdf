"""The collector role: act in N envs with its learner's latest policy, write segments to Reverb.

A plain class implementing ``roles/contract.CollectorRole`` (``launch/ray_roles.py`` makes it a Ray
actor).

Acting runs on the collector's device; finished segments go to a background
writer thread, so the acting loop only waits when the replay service pushes
back (rate limiter) — and that wait is counted. Parameters are fetched every
``params_fetch_every`` collection steps, which bounds their staleness.

Crash safety: after every collection step the collector records its counters
(env steps, collections, segments handed to the writer, RNG key) in
``collector/checkpoint.json``, written atomically, and its coverage statistics
at every log. Constructed with ``resume=True`` it continues from that record;
segments it had queued but that never reached the replay are counted by the
driver as lost (segments handed over minus the tables' inserts). A failing
parameter fetch (its learner is restarting) keeps the parameters it has.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import jax
import numpy as np

from deepcrl.buffer import replay_backend
from deepcrl.buffer.async_writer import AsyncSegmentWriter, WriterAbandoned
from deepcrl.collector.coverage import coverage_metrics, grid_for, init_coverage, update_coverage
from deepcrl.collector.rollout import unroll
from deepcrl.collector.segments import SegmentAssembler
from deepcrl.configs.experiment import Experiment
from deepcrl.learner.agent import make_agent
from deepcrl.roles.contract import FetchParams, RoleBase
from deepcrl.rundir.checkpoints import (
    replace_keeping_previous,
    resolve,
    restore_with_fallback,
    write_json_atomic,
)
from deepcrl.rundir.metrics import MetricsLog


class _TableSwitch:
    """A ``set_tables`` call: the tables asked for, and the env steps when they took effect."""

    def __init__(self, tables: tuple[str, ...]) -> None:
        self.tables, self.env_steps, self.done = tables, -1, threading.Event()


class Collector(RoleBase):
    name = "collector"  # also its folder of the run directory
    _wall_before = 0.0  # wall time of its earlier lives (restored): wall_time goes on across restarts
    _started: float | None = None  # when this life's run() began

    def __init__(
        self,
        experiment: Experiment,
        address: str,
        run_dir: str,
        fetch_params: FetchParams,
        sink=None,
        resume: bool = False,
    ):
        super().__init__()  # liveness: env steps collected, read by the driver's watchdog via progress()
        self.config = config = experiment.config
        env = experiment.env()
        self.layout = experiment.layout
        self.until_env_steps = experiment.layout.total_env_steps  # whole epochs: what `single` collects
        self.spec = experiment.replay
        self.venv = experiment.train_venv()  # with the config's reset rule
        self.agent = agent = make_agent(experiment.agents[experiment.collector.name])
        self.fetch_params = fetch_params
        # Reverb 0.14 logs a warning per item from ~50 unconfirmed items on; stay below that.
        self.tables = experiment.fed_tables  # each learner's table (and spares fed for a warm attach)
        self.backend = replay_backend.load(self.spec.backend)  # its side of the replay, Reverb's or Ray's
        sink = sink or self.backend.SegmentWriter(address, self.spec, self.tables, max_in_flight_items=32)
        self._switch_lock = threading.Lock()
        self._switch: _TableSwitch | None = None  # a set_tables() call the acting loop has yet to apply
        self._in_loop = False
        self.writer = AsyncSegmentWriter(sink, queue_size=config.writer_queue)
        self.dir = Path(run_dir) / self.name
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

        self.act_unroll = jax.jit(act_unroll)  # public: benchmarks time it alone
        self.versions_seen: list[int] = []
        self.max_steps_between_fetches = 0
        self.segments_written = 0  # segments handed to the writer, over every life of the collector
        self.env_steps, self.collections, self.fetch_failures = 0, 0, 0
        self._logged_at = -1
        if resume:
            self._restore()
        else:
            self._start_over()
        self.log = MetricsLog(self.dir)
        self.liveness.count = self.env_steps  # a restored collector continues its count

    @property
    def record_path(self) -> Path:
        return self.dir / "checkpoint.json"

    def _restore(self) -> None:
        """Continue from the record (``checkpoint.json``), else the one before it (``.old``, with one
        ``warning:`` line); ``CheckpointError`` (one line) when neither loads, or when there is none
        although the metrics show progress (more than one row): never a silent fresh start."""
        if not self._found(self.record_path, "record", "env_steps"):
            return  # died before its first collection step: starts over

        def load_record(path: Path) -> dict:
            record = json.loads(path.read_text())
            return {
                "env_steps": int(record["env_steps"]),
                "collections": int(record["collections"]),
                "segments_put": int(record["segments_put"]),
                "fetch_failures": int(record.get("fetch_failures", 0)),
                "wall_time": float(record.get("wall_time", 0.0)),
                "key": np.asarray(record["key"], np.uint32),
            }

        def load_coverage(path: Path) -> dict:
            with np.load(path) as saved:
                return {k: jax.numpy.asarray(saved[k]) for k in self.coverage}

        record = restore_with_fallback(self.record_path, load_record, what="collector record")
        self.env_steps, self.collections = record["env_steps"], record["collections"]
        self.segments_written, self.fetch_failures = record["segments_put"], record["fetch_failures"]
        self.key = jax.numpy.asarray(record["key"])
        coverage = self.dir / "coverage.npz"
        if resolve(coverage) is not None:  # saved at the first log
            self.coverage = restore_with_fallback(coverage, load_coverage, what="collector coverage")
        rows = self._rows_kept(lambda row: row["env_steps"] <= self.env_steps)  # the cursor: env steps
        self._logged_at = rows[-1]["env_steps"] if rows else -1
        self._wall_before = max([record["wall_time"], *(r.get("wall_time", 0.0) for r in rows)])

    def _save_record(self) -> None:
        write_json_atomic(
            self.record_path,
            {
                "env_steps": self.env_steps,
                "collections": self.collections,
                "segments_put": self.segments_written,
                "fetch_failures": self.fetch_failures,
                "key": np.asarray(jax.device_get(self.key)).tolist(),
                "wall_time": self._wall_time(),
            },
            fsync=False,  # survives a killed process; only a machine crash could lose the last steps
            keep_previous=True,  # checkpoint.json.old: _restore falls back to it if the latest is damaged
        )

    def _save_coverage(self) -> None:
        tmp = self.dir / f".coverage.tmp-{os.getpid()}.npz"
        np.savez(tmp, **{k: np.asarray(v) for k, v in jax.device_get(self.coverage).items()})
        replace_keeping_previous(tmp, self.dir / "coverage.npz")  # coverage.npz.old: the one before

    def checkpoint(self) -> str:
        """The record: written after every collection step already, so there is nothing to do."""
        return str(self.record_path)

    def reconnect(self, address: str) -> None:
        """The replay moved: a put blocked on the old one gives up now (a writer whose store died never
        comes back; Reverb's would reconnect, but its queue is abandoned at the switch anyway)."""
        super().reconnect(address)
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.abandon()

    def _switch_replay(self, address: str) -> None:
        self.writer.abandon()  # what it still held is lost, and counted as such by the driver
        with self.liveness.waiting("replay"):  # connecting to the new server (bounded by its timeout)
            sink = self.backend.SegmentWriter(address, self.spec, self.tables, max_in_flight_items=32)
        self.writer = AsyncSegmentWriter(sink, queue_size=self.config.writer_queue)

    def set_tables(self, tables: list[str]) -> int:
        """Write every segment from the next collection step on to ``tables`` (a learner attached or
        detached); returns the env steps collected before the switch, where the new data begins."""
        switch = _TableSwitch(tuple(tables))
        with self._switch_lock:
            if self._in_loop:
                self._switch = switch  # applied by the acting loop between two collection steps
            else:
                self._apply(switch)
        if not switch.done.wait(timeout=600):
            raise TimeoutError("the collector did not reach its next collection step within 600 s")
        return switch.env_steps

    def _apply(self, switch: _TableSwitch) -> None:
        self.tables = switch.tables
        if not self.writer.closed:
            self.writer.set_tables(switch.tables)
        switch.env_steps = self.env_steps
        switch.done.set()

    def _take_switch(self, leaving: bool = False) -> None:
        with self._switch_lock:
            switch, self._switch = self._switch, None
            self._in_loop = not leaving
            if switch is not None:
                self._apply(switch)

    def set_fetch(self, fetch_params: FetchParams) -> None:
        """Take parameters from a new learner (the driving learner was restarted)."""
        self.fetch_params = fetch_params

    def _fetch(self, lag: int) -> int:
        try:
            with self.liveness.waiting("learner params"):  # a frozen learner is watched on its own
                new_version, new_actor = self.fetch_params(self.version)
        except Exception:  # its learner is down or restarting: keep acting with what we have
            self.fetch_failures += 1
            return lag
        lag = new_version - self.version  # learner updates the old parameters were behind
        if new_actor is not None:
            self.version, self.actor = new_version, new_actor
        self.versions_seen.append(self.version)
        return lag

    def ready(self) -> dict:
        """Where this role runs (roles.json) and the env steps it starts from."""
        return {"pid": os.getpid(), "node": socket.gethostname(), "env_steps": self.env_steps}

    def policy_actions(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions of the parameters the collector acts with now."""
        return np.asarray(self.agent.act(self.actor, jax.numpy.asarray(obs), deterministic=True))

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> dict:
        """Collect the env steps ``single`` makes (``layout.total_env_steps``: whole epochs), or until
        ``stop()``; returns the collector's counters."""
        cfg = self.config
        k_reset, self.key = jax.random.split(self.key)
        env_state = jax.jit(self.venv.reset)(k_reset)
        assembler = SegmentAssembler(self.layout.segment_length)
        # A resumed collector fetches its learner's parameters before acting.
        since_fetch, acting_s = (cfg.params_fetch_every if self.resumed else 0), 0.0
        start_steps = self.env_steps
        log_every = max(1, self.layout.collections_per_epoch)
        start = self._started = time.time()
        success, lag = [], 0
        try:
            while self.env_steps < self.until_env_steps and not self._stop.is_set():
                self._take_switch()
                if since_fetch >= cfg.params_fetch_every:
                    lag = self._fetch(lag)
                    since_fetch = 0
                t0 = time.time()
                self.key, k = jax.random.split(self.key)
                env_state, steps, metrics, self.coverage = self.act_unroll(
                    self.actor, env_state, self.coverage, k
                )
                steps = jax.device_get(steps)
                acting_s += time.time() - t0
                for segment in assembler.add(steps):
                    address = self._moved_to()
                    if address is not None:
                        self._switch_replay(address)
                    try:
                        with self.liveness.waiting("replay"):  # blocked by the tables' rate limiters
                            self.writer.put(segment)
                    except WriterAbandoned:  # the replay moved while this put waited: segment lost
                        pass
                    self.segments_written += segment["episode_id"].shape[0]
                success.append(float(metrics["success"].mean()))
                self.env_steps += cfg.num_envs * cfg.unroll_length
                self.liveness.advance(cfg.num_envs * cfg.unroll_length)
                self.collections += 1
                since_fetch += 1
                self.max_steps_between_fetches = max(self.max_steps_between_fetches, since_fetch)
                if self.collections % log_every == 0:
                    self._log(self.env_steps - start_steps, start, acting_s, lag, success)
                    self._save_coverage()
                    success = []
                self._save_record()
        finally:
            self._take_switch(leaving=True)
            self.writer.close()
            if self._logged_at != self.env_steps:  # not logged at this step yet: the final row
                self._log(self.env_steps - start_steps, start, acting_s, lag, success)
            self._save_coverage()
            self._save_record()
            self.log.close()
        return {
            "env_steps": self.env_steps,
            "segments_written": self.segments_written,
            "steps_written": self.segments_written * self.layout.segment_length,
            "params_fetches": len(self.versions_seen),
            "params_distinct_versions": len(set(self.versions_seen)),
            "params_last_version": self.version,
            "max_collections_between_fetches": self.max_steps_between_fetches,
            "params_fetch_failures": self.fetch_failures,
            "writer_blocked_puts": self.writer.puts_blocked,
            "writer_blocked_s": self.writer.put_blocked_s,
            "wall_time": self._wall_time(),
            **coverage_metrics(self.coverage, self.grid),
        }

    def _wall_time(self) -> float:
        """Seconds collecting, over every life of the collector (a restart goes on from its record)."""
        return self._wall_before + (time.time() - self._started if self._started is not None else 0.0)

    def _log(self, steps_this_life, start, acting_s, lag, success) -> None:
        """One metrics row; rates count this life of the collector only (a restart resets them)."""
        elapsed = max(time.time() - start, 1e-9)
        env_steps = steps_this_life
        self._logged_at = self.env_steps
        self.log.write(
            self.env_steps,
            {
                "wall_time": self._wall_time(),
                "env_steps_per_s": env_steps / elapsed,
                "acting_env_steps_per_s": env_steps / max(acting_s, 1e-9),
                "segments_written": self.segments_written,
                "params_version": self.version,
                "params_lag_updates": lag,
                "writer_blocked_puts": self.writer.puts_blocked,
                "writer_blocked_s": self.writer.put_blocked_s,
                "train/time_at_goal_frac": float(np.mean(success)) if success else 0.0,
                **coverage_metrics(self.coverage, self.grid),
            },
        )
