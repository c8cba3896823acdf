"""The learner role: sample segments from its Reverb table, relabel, update, evaluate, log.

A plain class implementing ``roles/contract.LearnerRole`` (``launch/ray_roles.py`` makes it a Ray
actor). It runs the very same relabeling and update functions as the fused ``single`` loop.

Crash safety: the learner checkpoints everything it needs to continue — train
state (parameters, optimizer state, step count), RNG key, round and sample
counters and its metrics cursor (rows written) — at every evaluation, every
``checkpoint_every_s`` seconds and at the round after a ``checkpoint()`` call.
Constructed with ``resume=True`` (a restart after a crash, or ``run.py
--resume``) it restores that checkpoint and drops the metric rows written after
it, so its metrics continue without duplicates (``RoleBase``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib
from pathlib import Path

import jax
import numpy as np

from deepcrl.buffer import replay_backend
from deepcrl.buffer.relabel import relabeled_minibatches
from deepcrl.collector.rollout import evaluate
from deepcrl.configs.experiment import Experiment
from deepcrl.learner import devices
from deepcrl.learner.agent import make_agent
from deepcrl.roles.contract import RoleBase
from deepcrl.rundir.checkpoints import restore_train_state, save_train_state
from deepcrl.rundir.metrics import HEADLINE, MetricsLog, write_config


def host_copy(tree):
    """Numpy arrays the caller owns. ``jax.device_get`` on CPU returns views of the device buffers,
    which the next donating update may overwrite in place (seen on jaxlib 0.4.34 with an executable
    loaded from the persistent compilation cache): published parameters would change under the
    collector. From an accelerator ``device_get`` already copies, so only CPU arrays are copied again."""
    host = jax.device_get(tree)
    leaves = jax.tree_util.tree_leaves(tree)
    on_cpu = all(d.platform == "cpu" for x in leaves if isinstance(x, jax.Array) for d in x.devices())
    return jax.tree_util.tree_map(np.copy, host) if on_cpu else host


class Learner(RoleBase):
    def __init__(
        self,
        experiment: Experiment,
        name: str,
        address: str,
        run_dir: str,
        resume: bool = False,
        env_steps_offset: int = 0,
    ):
        super().__init__()
        self.config = config = experiment.config
        self.name = name
        env = experiment.env()
        self.layout = experiment.layout
        self.spec = experiment.replay
        self.address = address
        self.agent = agent = make_agent(experiment.agents[name])
        self.dir = Path(run_dir) / name
        self.key, k_init = jax.random.split(
            jax.random.PRNGKey(config.seed + zlib.crc32(name.encode()) % 100_000)
        )
        # Its update over `devices_per_learner` local devices (learner/devices.py): parameters replicated,
        # each minibatch split along its batch axis, InfoNCE over the whole batch.
        self.mesh = devices.make_mesh(devices.count(config.get("devices_per_learner", 1), name="devices_per_learner"))
        self._replicated = devices.sharding(self.mesh, None)
        self.train_state = agent.init(k_init)
        self.rounds = 0
        self.rows_written = 0  # the metrics cursor
        self.last_eval: dict = {}
        self._logged_rounds = -1
        self._samples_before = 0  # samples drawn and wait time of earlier lives of this learner
        self._wait_before = 0.0
        self._wall_before = 0.0
        if resume:
            self._restore()  # a CheckpointError here leaves its folder as it was
        else:
            self._start_over()
        self.train_state = devices.put(self.train_state, self._replicated)
        write_config(self.dir, experiment.role_config(name))
        self.log = MetricsLog(self.dir)
        self.segments_per_round = experiment.segments_per_round
        role = experiment.learner(name)
        self.table = role.table_name  # its own name, or the spare table it took when attached
        self.backend = replay_backend.load(self.spec.backend)  # its side of the replay, Reverb's or Ray's
        self.sampler = self.backend.SegmentSampler(address, self.table, self.segments_per_round, self.spec)
        self.env_steps_offset = int(env_steps_offset)
        self.joined_at = role.joined_at  # the collector's env steps when this learner's data began (-1: at 0)
        # Every learner stops after exactly the updates `single` makes in the run's env steps (counted
        # from its join when attached): its last row sits at the collector's total. The rate limiter
        # alone would also grant its error buffer (+5.6 % updates in the headline job).
        self.until_env_steps = self.layout.total_env_steps
        self._last_checkpoint = time.time()
        eval_venv = experiment.eval_venv()  # config.eval_env, or env itself
        goal_indices = env.spec.goal_indices

        def round_fn(ts, segments, key):
            k_relabel, k_update = jax.random.split(key)
            batches = relabeled_minibatches(
                k_relabel, segments, goal_indices, config.gamma, config.num_minibatches, config.batch_size
            )
            batches = jax.lax.with_sharding_constraint(batches, devices.sharding(self.mesh, 1))
            return agent.update_many(ts, batches, k_update)

        def eval_fn(actor, key):
            return evaluate(eval_venv, lambda obs, k: agent.act(actor, obs, deterministic=True), key)

        self.update_round = jax.jit(round_fn, donate_argnums=0)  # public: benchmarks time it alone
        self._eval = jax.jit(eval_fn)
        self._stop = threading.Event()
        self._use_up_quota = False
        self._save_soon = threading.Event()  # checkpoint() asked for one
        self._lock = threading.Lock()
        self._published = (int(self.train_state.step), host_copy(self.train_state.actor))
        self.liveness.count = int(self.train_state.step)  # updates made; the driver watches it

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoints" / "latest"

    def _state(self, wall_time: float) -> dict:
        return {
            "train_state": self.train_state,
            "key": self.key,
            "rounds": np.asarray(self.rounds, np.int64),
            "rows_written": np.asarray(self.rows_written, np.int64),
            "samples_drawn": np.asarray(self.samples_drawn, np.int64),
            "sample_wait_s": np.asarray(self.sample_wait_s, np.float64),
            "wall_time": np.asarray(self._wall_before + wall_time, np.float64),
        }

    def _restore(self) -> None:
        """Continue from the latest checkpoint, if any; metric rows after it are dropped.

        A damaged latest checkpoint falls back to the one before it (one ``warning:`` line);
        ``CheckpointError`` (one line) when none restores, or when there is none although the
        metrics show progress (rows after the untrained policy's): never a silent fresh start.
        """
        expected = self.config.get("checkpoint", True)
        if not self._found(self.checkpoint_path, "checkpoint", "updates", expected):
            return  # died before its first checkpoint: starts over
        saved = restore_train_state(self.checkpoint_path, self._state(0.0))  # or CheckpointError
        self.train_state, self.key = saved["train_state"], saved["key"]
        self.rounds, self.rows_written = int(saved["rounds"]), int(saved["rows_written"])
        self._samples_before, self._wait_before = int(saved["samples_drawn"]), float(saved["sample_wait_s"])
        self._wall_before = float(saved["wall_time"])
        kept = iter(range(self.rows_written))  # the cursor: the first rows_written rows
        rows = self._rows_kept(lambda row: next(kept, None) is not None)
        if rows:
            self.last_eval, self._logged_rounds = rows[-1], int(rows[-1].get("rounds", -1))

    def save_checkpoint(self, wall_time: float) -> None:
        if self.config.checkpoint:
            save_train_state(self.checkpoint_path, self._state(wall_time))
        self._last_checkpoint = time.time()

    def checkpoint(self) -> str:
        """Have the training loop save at its next round (besides every evaluation, every
        ``checkpoint_every_s`` and the end); where restarts read it."""
        self._save_soon.set()
        return str(self.checkpoint_path)

    @property
    def samples_drawn(self) -> int:
        return self._samples_before + self.sampler.items_sampled if hasattr(self, "sampler") else 0

    @property
    def sample_wait_s(self) -> float:
        return self._wait_before + self.sampler.wait_s if hasattr(self, "sampler") else 0.0

    def ready(self) -> dict:
        """Where this role runs (roles.json) and from which update it starts."""
        return {"pid": os.getpid(), "node": socket.gethostname(), "updates": int(self.train_state.step)}

    def set_env_steps_offset(self, offset: int, joined_at: int | None = None) -> None:
        """The collector's env-step count minus its table's inserts (in steps), from the driver.

        Zero until the replay is restored from a checkpoint: its tables then count the inserts the
        checkpoint holds, while the collector resumes from its own (usually different) checkpoint.
        A learner attached to a live run also learns here where its data began (``joined_at``).
        """
        self.env_steps_offset = int(offset)
        if joined_at is not None:
            self.joined_at = int(joined_at)

    def get_actor_params(self, have_version: int = -1) -> tuple[int, object | None]:
        """(update count, actor params as numpy), or (count, None) if the caller has them already.

        Skipping unchanged parameters matters at depth 1024, where they weigh hundreds of MB.
        """
        with self._lock:
            version, params = self._published
        return (version, None) if version == have_version else (version, params)

    def stop(self, use_up_quota: bool = False) -> None:
        """Stop training. With ``use_up_quota`` (the collector has finished) it first makes the updates
        its table's rate limiter still grants, up to the count ``single`` makes: the learner trails the
        collector by up to the limiter's error buffer, and without this a distributed run would end
        with fewer updates per env step than ``single`` (5,600 instead of 5,952 in a 300k-step probe)."""
        self._use_up_quota = use_up_quota and self.config.rate_limit == "ratio"
        self._stop.set()

    def collector_env_steps(self) -> int:
        """The collector's env-step count, as far as it reached this learner's table.

        After a replay restore it may be off by the segments that were in flight when the driver
        aligned the counts (writer queue + unconfirmed items: a few collections).
        """
        try:
            with self.liveness.waiting("replay"):  # a frozen replay is watched on its own (up to 10 s)
                inserts = self.backend.table_info(self.address, timeout_s=10)[self.table]["num_inserts"]
        except Exception:  # the replay is down or restarting: the last count we saw
            return getattr(self, "_collector_env_steps", 0)
        self._collector_env_steps = inserts * self.layout.segment_length + self.env_steps_offset
        return self._collector_env_steps

    def env_steps(self) -> int:
        """Where this learner's rows sit on the env-step axis: the env steps ``single`` collects to
        make as many updates (prefill + one collection step per ``num_minibatches`` updates).

        Strictly increasing with the updates, so no two rows of a learner share an env step (the
        collector's own count stands still once it finished, while the learner still uses up its
        rate limiter's quota), and comparable with ``single`` at equal update count. With the
        default rate limiter it trails the collector's count by at most the limiter's error buffer;
        the collector's count at each row is ``collector_env_steps``. A learner attached to a live run
        counts from the collector's env steps when it joined (with a warm start, without the prefill:
        its table was full already).
        """
        collections = int(self.train_state.step) / int(self.config.num_minibatches)
        origin = self.layout.prefill_env_steps
        if self.joined_at >= 0:
            origin = self.joined_at + (0 if self.config.get("attach_warm_start", False) else origin)
        return int(origin + round(collections * self.layout.steps_per_collection))

    def _evaluate_and_log(self, extra: dict) -> dict:
        self.key, k = jax.random.split(self.key)
        metrics = self._eval(self.train_state.actor, k)
        row = {
            "updates": int(self.train_state.step),
            "devices": len(self.mesh.devices.flat),
            "rounds": self.rounds,
            "samples_drawn": self.samples_drawn,
            "sample_wait_s": self.sample_wait_s,
            "collector_env_steps": self.collector_env_steps(),
            **{f"eval/{k}": v for k, v in metrics.items()},
            **extra,
        }
        self.last_eval = self.log.write(self.env_steps(), row)
        self.rows_written += 1
        self._logged_rounds = self.rounds
        return self.last_eval

    def _switch_replay(self, address: str) -> None:
        self.sampler.close()
        drawn, waited = self.sampler.items_sampled, self.sampler.wait_s
        self.address = address
        with self.liveness.waiting("replay"):  # connecting to the new server (bounded by its timeout)
            self.sampler = self.backend.SegmentSampler(
                address, self.table, self.segments_per_round, self.spec
            )
        self._samples_before += drawn
        self._wait_before += waited

    def train_round(self) -> dict | None:
        """One round: sample ``segments_per_round`` segments from the table, relabel, make
        ``num_minibatches`` updates, publish the actor. ``None`` when no batch came within 0.5 s."""
        try:
            batch = self.sampler.sample(timeout_s=0.5)
        except TimeoutError:
            return None
        segments = devices.put({k: np.asarray(v) for k, v in batch.data.items()}, self._replicated)
        self.key, k = jax.random.split(self.key)
        self.train_state, metrics = self.update_round(self.train_state, segments, k)
        self.rounds += 1
        self.liveness.advance(int(self.config.num_minibatches))
        with self._lock:
            self._published = (
                self.rounds * self.config.num_minibatches,
                host_copy(self.train_state.actor),
            )
        return metrics

    def run(self, eval_every_rounds: int | None = None) -> dict:
        """Train until ``stop()``; evaluate every ``eval_every_rounds`` rounds (default: once per
        epoch of ``single``, which makes as many updates per epoch) and at the end."""
        eval_every_rounds = eval_every_rounds or max(1, self.layout.collections_per_epoch)
        start = time.time()
        metrics: dict = {}
        if not self.resumed:  # a resumed learner logged this row in its earlier life
            self._evaluate_and_log({"wall_time": 0.0})
        wall = lambda: self._wall_before + time.time() - start
        every_s = float(self.config.get("checkpoint_every_s", 0.0) or 0.0)
        try:
            while (not self._stop.is_set() or self._use_up_quota) and self.env_steps() < self.until_env_steps:
                address = self._moved_to()
                if address is not None:
                    self._switch_replay(address)
                round_metrics = self.train_round()
                if round_metrics is None:  # table below min size, rate-limited or replay down
                    if self._stop.is_set():  # the collector is done and the limiter grants no more
                        break
                    self.liveness.beat()  # waiting for data is not a stall (the collector is watched)
                    continue
                metrics = round_metrics
                if self.env_steps() >= self.until_env_steps:
                    self._stop.set()  # the updates `single` makes are done: the final evaluation follows
                    self._use_up_quota = False
                evaluate = self.rounds % eval_every_rounds == 0
                if evaluate:
                    self._evaluate_and_log({"wall_time": wall(), **jax.device_get(metrics)})
                due = every_s and time.time() - self._last_checkpoint >= every_s
                if evaluate or due or self._save_soon.is_set():
                    self._save_soon.clear()
                    self.save_checkpoint(time.time() - start)  # a killed learner resumes from here
            return self.finish(wall(), metrics)
        finally:
            self.sampler.close()
            self.log.close()

    def finish(self, wall_time: float, metrics: dict) -> dict:
        if self.last_eval and self._logged_rounds == self.rounds:
            row = self.last_eval  # evaluated after this very update already: no duplicate final row
        else:
            row = self._evaluate_and_log({"wall_time": wall_time, **jax.device_get(metrics)})
        self.save_checkpoint(wall_time - self._wall_before)
        if self.config.checkpoint:
            save_train_state(self.dir / "checkpoints" / "final", self.train_state)
        return {
            "learner": self.name,
            "updates": int(self.train_state.step),
            "samples_drawn": int(self.samples_drawn),
            **{k: float(row[k]) for k in HEADLINE},  # the final evaluation, under the metrics' own names
            "env_steps": int(row["env_steps"]),
            "collector_env_steps": int(row.get("collector_env_steps", 0)),
        }
