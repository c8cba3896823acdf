"""The driver's side of a distributed run: start the roles, re-create the dead ones, keep roles.json.

Ray's own actor restarts (``max_restarts``) would re-run a role's constructor
with its first arguments; here a restarted role must instead resume from its
checkpoint, the replay must come back on its old port, the collector must be
re-wired to a new driving learner, and a dead learner's table drained while it
is down. So the driver re-creates actors itself, which Ray's fault-tolerance
guide lists as the way to recover an actor with new arguments.

A role can also hang without dying (SIGSTOP, a wedged GPU driver, a dead NFS
mount, a deadlock). The watchdog here polls every role's ``progress()``
(``rundir/liveness.py``): a role silent past its limit — ``role_start_timeout_s``
from its (re)creation until its loop first beats, then ``role_stall_timeout_s``
or the adaptive limit — is killed for certain (SIGKILL of its PID on its node,
then ``ray.kill``) and replaced by the same rules as a dead role. Roles waiting
on another role report themselves alive, so the stalled role is blamed, not its
victims.

Every remote call made here is a method of ``roles/contract.py`` (``tests/test_layers.py`` checks it);
``launch/ray_roles.py`` turns the role classes into actors.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from deepcrl.configs.experiment import Experiment
from deepcrl.configs.validation import ConfigError
from deepcrl.launch import ray_roles
from deepcrl.launch.cli import STOP, RoleFailed
from deepcrl.launch.elastic import Elastic
from deepcrl.launch.watchdog import RoleStalled, Watchdog, root_cause
from deepcrl.roles.collector import Collector
from deepcrl.roles.learner import Learner
from deepcrl.roles.replay import ReplayService
from deepcrl.rundir.checkpoints import CheckpointError
from deepcrl.rundir.diskspace import DiskFull, describe_full_disk, full_disk_path
from deepcrl.rundir.rolebook import RoleBook

INTERRUPT_S = 18.0  # after Ctrl-C/SIGTERM: time the roles get to stop and checkpoint (the process ends by 25 s)


def _fetch_from(ray, handle):
    """The collector's way to its driving learner's parameters (a failure keeps the old ones)."""

    def fetch(have: int):
        return ray.get(handle.get_actor_params.remote(have), timeout=120)

    return fetch


class Supervisor(Watchdog):
    def __init__(
        self,
        ray,
        experiment: Experiment,
        run_dir: Path,
        resume: bool = False,
    ):
        self.ray, self.experiment, self.run_dir = ray, experiment, Path(run_dir)
        self.config = config = experiment.config
        self.spec = experiment.replay
        self.learners = {r.name: r for r in experiment.learners}
        self.names = experiment.learner_names
        self.driving = self.names[0]
        self.resume = resume
        kinds = {"replay": "replay", **({"collector": "collector"} if experiment.collector else {}),
                 **{n: "learner" for n in self.names}}  # fmt: skip
        self.roles = RoleBook(self.run_dir / "roles.json", kinds)
        self.max_restarts = int(config.get("max_role_restarts", 3))
        self.handles: dict[str, object] = {}
        self.running: dict = {}  # ref of a role's run() -> name
        self.starting: dict = {}  # ref of a role's start() -> name, until it is up
        self.results: dict = {}
        self.dropped: set[str] = set()
        self.collector_done = False
        self.port: int | None = None
        self.address = ""
        self.offsets: dict[str, int] = {}  # learner -> collector's env steps minus its table's inserts (steps)
        self.detached: list = []  # RoleSpecs of learners detached from the live run (launch/elastic.py)
        self.interrupted = False  # Ctrl-C or SIGTERM stopped the run
        # The watchdog (module docstring): limits, and what each role last told about its progress.
        self.stall_fixed_s = float(config.get("role_stall_timeout_s", 0.0))
        self.start_timeout_s = float(config.get("role_start_timeout_s", 900.0))
        self.poll_every_s = float(config.get("role_progress_every_s", 2.0))
        self.node_id = ray.get_runtime_context().get_node_id()
        self.created_at: dict[str, float] = {}  # monotonic time of each role's latest (re)creation
        self.where: dict[str, dict] = {}  # name -> pid, node_id, ... (whoami, then start's answer)
        self.where_refs: dict = {}  # ref of whoami() -> name
        self.ping_refs: dict = {}  # ref of whoami() asked of a starting role (is its process alive?) -> name
        self.progress_refs: dict = {}  # ref of progress() -> name
        self.watch: dict[str, dict] = {}  # name -> last_alive (monotonic), count, longest pause, phase
        self._next_poll = 0.0
        self.elastic = Elastic(self)  # learners that join or leave the live run

    # ---------------------------------------------------------------- creating roles
    def _create(self, name: str, resume: bool):
        """A new actor for the role ``name`` (built by its ``start()``, resumed with ``resume``)."""
        c, run_dir = self.config, str(self.run_dir)
        cpus = float(c.get("cpus_per_role", 1.0))
        if name == "replay":
            seed = str(Path(c.from_run) / "replay") if self.experiment.collector is None else None
            args = (self.spec, str(self.run_dir / "replay"), self.port, seed)
            return ray_roles.create(ReplayService, name, *args, num_gpus=0, num_cpus=cpus, concurrency=8)
        if name == "collector":
            fetch = _fetch_from(self.ray, self.handles[self.driving])
            args = (self.experiment, self.address, run_dir, fetch, None, resume)
            gpus = float(c.gpus_per_collector)
            return ray_roles.create(Collector, name, *args, num_gpus=gpus, num_cpus=cpus, concurrency=3)
        args = (self.experiment, name, self.address, run_dir, resume, self.offsets.get(name, 0))
        spec_gpus = self.learners[name].gpus
        gpus = float(c.gpus_per_learner) if spec_gpus < 0 else spec_gpus
        return ray_roles.create(Learner, name, *args, num_gpus=gpus, num_cpus=cpus, concurrency=4)

    def launch(self, name: str, resume: bool):
        """Create the role's actor (which answers ``whoami`` at once) and start it; the start's ref."""
        self.handles[name] = h = self._create(name, resume)
        self.created_at[name] = now = time.monotonic()
        self.where.pop(name, None)
        self.where_refs[h.whoami.remote()] = name
        self.watch[name] = {"last_alive": now, "count": None, "longest": 0.0, "phase": "starting"}
        self.roles.update(name, write=False, phase="starting")
        return h.start.remote()

    def start_run(self, name: str) -> None:
        h = self.handles[name]
        if name in self.learners and self.collector_done:
            h.stop.remote(use_up_quota=True)  # came back after the end: its remaining updates, then return
        self.running[h.run.remote()] = name

    def _mark_up(self, name: str, info: dict) -> None:
        r = self.roles.roles[name]
        down = time.time() - r["down_since"] if r["down_since"] else 0.0
        if name == "replay" and not info.get("address"):  # the node's IP (from Ray) and the server's port
            info["address"] = f"{info['ip']}:{info['port']}"
        self.where[name] = info
        where = {k: info[k] for k in ("node_id", "gpu_ids", "jax_devices", "address") if k in info}
        # The count this life starts from: a learner's updates, the collector's env steps, the items
        # the replay holds (restored from its checkpoint on a restart).
        where["resumed_from"] = next((info[k] for k in ("updates", "env_steps", "items") if k in info), None)
        self.roles.update(
            name, status="running", pid=info["pid"], node=info["node"],
            downtime_s=r["downtime_s"] + down, down_since=None, **where,
        )  # fmt: skip

    def start(self) -> None:
        """Replay first (the others need its address), then learners and collector. A role whose own
        code raises here ends the run (it would raise on a retry too); one that dies or hangs while
        starting is replaced (``_await_start``)."""
        self.starting[self.launch("replay", self.resume)] = "replay"
        info = self._await_start("replay")
        self.address, self.port = info["address"], info["port"]
        self.elastic.drain_free_spares()
        collector = ["collector"] if self.experiment.collector is not None else []  # none: learners_from_replay
        for name in (*self.names, *collector):
            self.starting[self.launch(name, self.resume)] = name
        for name in self.names:
            self._await_start(name)
        if collector:
            steps = self._await_start("collector")["env_steps"]
            try:
                self._align_env_steps(steps, wait=True)
            except Exception as e:  # a role died meanwhile: its restart (or the replay's) aligns again
                print(f"warning: env steps not aligned at start: {root_cause(e)}", file=sys.stderr)
        for name in ("replay", *self.names, *collector):
            if name not in self.dropped:
                self.start_run(name)

    def _align_env_steps(self, collector_steps: int, wait: bool = False) -> None:
        """Tell the learners how their tables' insert counts map to the collector's env steps.

        A replay restored from its checkpoint counts the inserts that checkpoint holds, while the
        collector continues from its own checkpoint (or, after a replay restart, from where it was);
        without this, learners' metric rows would jump back in env steps after every restore. A table
        fed since a learner attached counts from then.
        """
        info = self.ray.get(self.handles["replay"].info.remote(), timeout=60)
        refs = []
        for n in self.names:
            if n in self.handles and n not in self.dropped and n not in self.elastic.joining:
                inserts = info[self.learners[n].table_name]["num_inserts"]
                self.offsets[n] = int(collector_steps) - inserts * self.spec.segment_length
                refs.append(self.handles[n].set_env_steps_offset.remote(self.offsets[n]))
        if wait:
            self.ray.get(refs, timeout=60)

    def _await_start(self, name: str) -> dict:
        """Wait for a role's first start. A fault of its process while it is created, compiled or made
        ready (killed, stopped, Ray's RPC to it failing) or a hang (``_check_stalls``: silent to pings,
        or not ready within ``role_start_timeout_s``) is that role's death: restarted (up to
        ``max_role_restarts``) or, a train-only learner, dropped; meanwhile every other starting role is
        watched too. An error its own code raises ends the run: it would raise again."""
        while True:
            STOP.check()  # a Ctrl-C that a library swallowed while this waited
            ref = next((r for r, n in self.starting.items() if n == name), None)
            if ref is None:  # a train-only learner that kept failing to start: the run goes on
                return {}
            done, _ = self.ray.wait([ref], num_returns=1, timeout=1.0)
            self._poll()  # PIDs into roles.json as soon as the roles answer whoami
            if done:
                del self.starting[ref]
                try:
                    info = self.ray.get(ref)
                    break
                except Exception as e:
                    self._start_failed(name, e)  # raises unless the role's process is to blame
                    self._kill_for_certain(name)  # a stopped process does not answer Ray
                    self._died(name, e)  # its replacement's start goes into self.starting
                    continue
            self._check_stalls()
        self._mark_up(name, info)
        return info

    def _start_failed(self, name: str, e: BaseException) -> None:
        """Raise what ends the run for a start that raised: bad input (``ConfigError``: one line, exit 2),
        or the role's own error (``RoleFailed``). Return when Ray reports the process itself failed."""
        cause = getattr(e, "cause", None) or e.__cause__ or e
        full = full_disk_path(e)
        if full is not None:
            raise DiskFull(describe_full_disk(full, self.run_dir, f"role {name}"))
        if isinstance(cause, (CheckpointError, ConfigError)):  # bad input: one line, exit 2
            raise ConfigError(f"role {name}: {str(cause).strip().splitlines()[-1]}") from None
        if isinstance(e, self.ray.exceptions.RayTaskError):  # its own code raised: it would again
            raise RoleFailed(f"role {name} failed to start: {root_cause(e)}") from None
        print(f"role {name} failed while starting ({root_cause(e)}); treated as its death", file=sys.stderr)

    # ---------------------------------------------------------------- events
    def _died(self, name: str, e: BaseException) -> None:
        """A role is gone (an error, a dead process, or a stall it was killed for): restart or drop it.
        A full disk ends the run instead (``DiskFull``): a restart would meet the same full disk."""
        full = full_disk_path(e)
        if full is not None:
            raise DiskFull(describe_full_disk(full, self.run_dir, f"role {name}"))
        err = root_cause(e)
        stalled = isinstance(e, RoleStalled)
        key = "stalls" if stalled else "deaths"
        r = self.roles.update(name, write=False, **{key: self.roles.roles[name][key] + 1})
        self._forget(name)
        if r["restarts"] >= self.max_restarts:
            if r["kind"] == "learner" and name != self.driving:
                self.dropped.add(name)  # its table stays drained: the collector is never held back
                self.results[name] = f"dropped after {r['restarts']} restarts: {err}"
                self.roles.update(name, status="dropped", last_error=err, pid=None)
                print(
                    f"note: learner {name} died again ({err}); dropped after {r['restarts']} restarts "
                    "(max_role_restarts), the run continues without it",
                    file=sys.stderr,
                )
                self._kill(name)
                return
            raise RoleFailed(
                f"role {name} {'stalled' if stalled else 'died'} {r['restarts'] + 1} times "
                f"(max_role_restarts={self.max_restarts}, deaths and stalls together); "
                f"last error: {err}"
            )
        self.roles.update(
            name, status="stalled" if stalled else "restarting", restarts=r["restarts"] + 1,
            last_error=err, pid=None, down_since=r["down_since"] or time.time(),
        )  # fmt: skip
        what = "stalled" if stalled else "died"
        print(f"role {name} {what} ({err}); restart {r['restarts']}/{self.max_restarts}", file=sys.stderr)
        self._kill(name)
        if r["kind"] == "learner" and self.experiment.collector is not None:  # keep the collector going
            self.handles["replay"].drain.remote(self.learners[name].table_name)
        if name == "replay" and r["restarts"] > 1:
            self.port = None  # its old port may be taken: take any, and tell the clients
        self.starting[self.launch(name, resume=True)] = name

    def _started(self, name: str, ref) -> None:
        try:
            info = self.ray.get(ref)
        except Exception as e:
            self._died(name, e)
            return
        self._mark_up(name, info)
        h = self.handles[name]
        if name == "replay":
            if info["address"] != self.address:
                self.address, self.port = info["address"], info["port"]
                for n in (*self.names, "collector"):
                    if n not in self.dropped and n in self.handles:
                        self.handles[n].reconnect.remote(self.address)
            for n in self.names:  # drains lived in the old server process
                if self.roles.roles[n]["status"] != "running":
                    h.drain.remote(self.learners[n].table_name)
            self.elastic.drain_free_spares()
            if "collector" in self.handles and self.roles.roles["collector"]["status"] == "running":
                try:
                    steps = self.ray.get(self.handles["collector"].ready.remote(), timeout=60)["env_steps"]
                    self._align_env_steps(steps)
                except Exception as e:  # the collector is down too: its own restart comes next
                    print(
                        f"warning: env steps not re-aligned after the replay restart: {root_cause(e)}",
                        file=sys.stderr,
                    )
        elif name in self.learners:
            self.handles["replay"].stop_drain.remote(self.learners[name].table_name)
            if name == self.driving and "collector" in self.handles:
                self.handles["collector"].set_fetch.remote(_fetch_from(self.ray, h))
            if self.elastic.started(name):  # attached: it runs once the collector feeds its table
                return
        self.start_run(name)

    def _finished(self, name: str, ref) -> None:
        try:
            value = self.ray.get(ref)
        except Exception as e:
            self._died(name, e)
            return
        if name == "replay" or self.elastic.finished(name, value):  # detached: launch/elastic.py
            return
        self.results[name] = value
        self.roles.update(name, status="finished")
        if name == "collector":
            self.collector_done = True
            for n in self.names:  # each learner first makes the updates its rate limiter still grants
                if n in self.handles and self.roles.roles[n]["status"] == "running":
                    self.handles[n].stop.remote(use_up_quota=True)

    def _done(self) -> bool:
        collected = self.collector_done or self.experiment.collector is None
        return collected and all(n in self.results for n in self.names)

    # ---------------------------------------------------------------- main loop
    def run(self) -> tuple[dict, dict]:
        """Run to the end; returns (results per role, replay table info). After Ctrl-C or SIGTERM
        (``interrupted`` is then set) every role is stopped within ``INTERRUPT_S`` seconds, keeping the
        checkpoints they finish in that time; those that do not finish are killed (their earlier
        checkpoints stay)."""
        STOP.on_hard_exit.append(self._mark_stopped)
        deadline = None
        try:
            self.start()
            self._loop()
        except KeyboardInterrupt:
            self.interrupted = True
            print("interrupted: stopping every role and writing final checkpoints", file=sys.stderr)
            deadline = time.monotonic() + INTERRUPT_S
            self._stop_all(deadline=deadline)
        except (RoleFailed, ConfigError, DiskFull):  # ConfigError: a role refused its input (a damaged checkpoint)
            self._stop_all(kill_collector=True)
            self._mark_stopped()
            raise
        info = self._final_replay_info(deadline)
        self._mark_stopped()
        return self.results, info

    def _mark_stopped(self) -> None:
        for r in self.roles.roles.values():
            if r["status"] in ("starting", "running", "restarting", "stalled"):
                r["status"] = "stopped"
        self.roles.write()

    def _loop(self) -> None:
        ray, c = self.ray, self.config
        deadline = time.time() + float(c.role_timeout_s) if c.role_timeout_s else None
        every = float(c.get("replay_checkpoint_every_s", 0.0))
        next_ckpt, ckpt_ref = time.time() + every, None
        while not self._done():
            STOP.check()
            refs = [*self.running, *self.starting]
            done, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            for ref in done:
                if ref in self.starting:
                    self._started(self.starting.pop(ref), ref)
                elif ref in self.running:  # not forgotten meanwhile (a stalled role's)
                    self._finished(self.running.pop(ref), ref)
            self._poll()
            self._check_stalls()
            self.elastic.poll()
            if time.time() - self.roles.written > 5:  # a heartbeat: `--attach` tells a live driver by it
                self.roles.write()
            if every and time.time() >= next_ckpt and self.roles.roles["replay"]["status"] == "running":
                if ckpt_ref is None or ray.wait([ckpt_ref], timeout=0)[0]:
                    ckpt_ref = self.handles["replay"].checkpoint.remote()
                next_ckpt = time.time() + every
            if not self.collector_done and deadline and time.time() > deadline:
                raise RoleFailed(f"run exceeded role_timeout_s={c.role_timeout_s}")

    def _final_replay_info(self, deadline: float | None = None) -> dict:
        replay = self.handles.get("replay")
        if replay is None:
            return {}
        left = lambda cap: cap if deadline is None else max(1.0, min(cap, deadline - time.monotonic()))  # noqa: E731
        try:
            info = self.ray.get(replay.info.remote(), timeout=left(60))
            self.ray.get(replay.checkpoint.remote(), timeout=left(300))
            drained = self.ray.get(replay.drained_counts.remote(), timeout=left(60))
        except Exception as e:
            print(f"warning: no final replay checkpoint: {root_cause(e)}", file=sys.stderr)
            return {}
        for table, n in drained.items():  # samples discarded on behalf of a learner that was down
            info[table]["drained_while_down"] = n
        return info

    def _stop_all(self, kill_collector: bool = False, deadline: float | None = None) -> None:
        """Stop the collector first (learners keep draining the rate-limited tables meanwhile),
        then the learners, collecting what they return (final checkpoints included) until
        ``deadline`` (monotonic; none: up to 300 s each).

        After a role died its table may no longer be drained, so the collector may be blocked
        on an insert for good: then it is killed instead of stopped.
        """
        timeout = lambda: 300.0 if deadline is None else max(0.5, deadline - time.monotonic())  # noqa: E731
        refs = {name: ref for ref, name in self.running.items() if name != "replay"}
        collector = self.handles.get("collector")
        if collector is not None:
            if kill_collector:
                self._kill("collector")
                refs.pop("collector", None)
            else:
                collector.stop.remote()
                if "collector" in refs:
                    self.results["collector"] = self._get_or_reason(refs.pop("collector"), timeout())
        for name in self.names:
            if name in self.handles:
                self.handles[name].stop.remote()
        for name, ref in refs.items():
            self.results[name] = self._get_or_reason(ref, timeout())

    def _get_or_reason(self, ref, timeout: float = 300):
        try:
            return self.ray.get(ref, timeout=timeout)
        except Exception as e:
            return f"failed: {root_cause(e)}"

    def _kill(self, name: str) -> None:
        try:
            self.ray.kill(self.handles[name], no_restart=True)
        except Exception:
            pass

    def shutdown(self) -> None:
        for name in ("collector", *self.names, "replay"):
            if name in self.handles:
                self._kill(name)
