"""Learners that join or leave a live distributed run: the driver's side of ``--attach``/``--detach``.

Reverb's tables are fixed when its server starts, so a run starts with ``spare_tables`` spare
tables. Attaching a learner (``launch/attach.py`` writes a request into ``RUN/requests/``, which the
driver reads every second) takes a free spare, starts a learner on it like any other, and, once it is
built, has the collector write to that table too from its next collection step on; the env steps
collected before that step are where the learner's data, and its curve, begin. With
``attach_warm_start`` the spares are fed and drained from the start instead, and the new learner
begins with what the table holds. Detaching stops a learner (final evaluation and checkpoint), takes
its table out of the collector's writes, and empties it, so the table holds nothing back and is free
again.

Attached and detached learners are recorded in ``RUN/learners.json``, which ``--resume`` reads: an
attached learner is a role like the others (restarted when it dies or stalls, resumed with the run).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from deepcrl.configs.experiment import Experiment
from deepcrl.configs.topologies import RoleSpec, attach_specs
from deepcrl.configs.validation import ConfigError
from deepcrl.rundir.checkpoints import write_json_atomic

REQUESTS = "requests"  # RUN/requests/<id>.json from launch/attach.py; the answer is <id>.answer.json
RECORD = "learners.json"


def load_record(run_dir: Path) -> dict:
    """``RUN/learners.json``: {"attached": [RoleSpec fields...], "detached": [{..., "result": row}]}."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return {"attached": [], "detached": []}
    try:
        record = json.loads(path.read_text())
        [RoleSpec(**r) for r in record["attached"]]  # noqa: B018 - every entry must still make a learner
        return record
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{path} does not parse ({type(e).__name__}); the run's learners are unknown") from None


def with_attached(experiment: Experiment, run_dir: Path) -> Experiment:
    """The run as it stood: the learners attached before (for ``--resume``), without the detached."""
    record = load_record(run_dir)
    return experiment.with_learners(added=[RoleSpec(**r) for r in record["attached"]])


class Elastic:
    """Reads attach/detach requests and carries them out, inside the supervisor's loop."""

    def __init__(self, sup) -> None:
        self.sup = sup
        self.dir = sup.run_dir / REQUESTS
        self.record = load_record(sup.run_dir)
        self.joining: dict[str, str] = {}  # learner being started -> request id
        self.switches: dict = {}  # ref of collector.set_tables() -> (learner, table inserts before)
        self.requests: dict[str, dict] = {}  # request id -> {"names": [...], "done": {...}}
        self.leaving: dict[str, str] = {}  # learner being detached -> request id
        self.on_new_learner = lambda name: None  # the progress display adds a line
        for path in self.dir.glob("*.json") if self.dir.is_dir() else []:  # requests of an earlier driver
            if not path.name.endswith(".answer.json"):
                self.requests[path.stem] = {"names": [], "done": {}}
                if not (self.dir / f"{path.stem}.answer.json").exists():
                    self._answer(path.stem, ok=False, error="the run's driver restarted before answering; ask again")
        for r in self.record["detached"]:  # a resumed run still shows who left it
            sup.roles.add(r["name"], "learner", write=False)
            sup.roles.update(r["name"], write=False, status="detached", table=r["table"], joined_at=r["joined_at"])

    def drain_free_spares(self) -> None:
        """With ``attach_warm_start`` the free spares are fed: the replay drains them (so they never
        hold the collector back) until a learner takes one."""
        exp = self.sup.experiment
        if exp.config.get("attach_warm_start", False) and exp.collector is not None:
            for table in exp.free_tables:
                self.sup.handles["replay"].drain.remote(table)

    # ---------------------------------------------------------------- requests
    def poll(self) -> None:
        """Take new requests; collect the collector's answers to table switches."""
        if self.switches:
            done, _ = self.sup.ray.wait(list(self.switches), num_returns=len(self.switches), timeout=0)
            for ref in done:
                self._switched(ref)
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*.json")):
            if path.name.endswith(".answer.json") or path.stem in self.requests:
                continue
            req_id = path.stem
            self.requests[req_id] = {"names": [], "done": {}}
            try:
                req = json.loads(path.read_text())
                if req.get("op") == "attach":
                    self._attach(req_id, req)
                elif req.get("op") == "detach":
                    self._detach(req_id, req)
                else:
                    raise ConfigError(f"unknown request {req.get('op')!r}; valid: attach, detach")
            except (ConfigError, ValueError, KeyError, TypeError) as e:
                self._answer(req_id, ok=False, error=str(e) if isinstance(e, ConfigError) else repr(e))

    def _answer(self, req_id: str, ok: bool, **fields) -> None:
        write_json_atomic(self.dir / f"{req_id}.answer.json", {"ok": ok, **fields}, fsync=False)

    def _save(self) -> None:
        write_json_atomic(self.sup.run_dir / RECORD, self.record, fsync=False)

    # ---------------------------------------------------------------- attach
    def _attach(self, req_id: str, req: dict) -> None:
        sup, exp = self.sup, self.sup.experiment
        if exp.collector is None:
            raise ConfigError(f"{exp.topology} runs have no collector to feed another learner; start another one")
        if sup.collector_done:
            raise ConfigError("the collector has finished: there is no more data to attach a learner to")
        warm = bool(exp.config.get("attach_warm_start", False))
        if req.get("attach_warm_start", warm) != warm:
            raise ConfigError(
                f"this run was started with attach_warm_start={str(warm).lower()}: its spare tables "
                f"{'are fed from the start' if warm else 'hold no data'}; a warm attach needs a run started "
                "with --set attach_warm_start=true"
            )
        taken = [*sup.names, *(r["name"] for r in self.record["detached"])]
        specs = attach_specs(exp.config, str(req["learner_depths"]), str(req.get("learner_widths", "")),
                             taken, name=str(req.get("role", "")))  # fmt: skip
        free = exp.free_tables
        if len(specs) > len(free):
            raise ConfigError(
                f"{len(specs)} learner(s) asked, {len(free)} spare table(s) free (this run started with "
                f"spare_tables={exp.config.get('spare_tables', 0)}); detach a learner, or start runs with "
                "--set spare_tables=N to attach more"
            )
        gpus = float(req.get("gpus_per_learner", exp.config.gpus_per_learner))
        self._check_resources(len(specs), gpus)
        specs = [dataclasses.replace(s, table=t, gpus=gpus) for s, t in zip(specs, free[: len(specs)], strict=True)]
        sup.experiment = exp.with_learners(added=specs)
        self.requests[req_id]["names"] = [s.name for s in specs]
        for s in specs:
            sup.learners[s.name] = s
            sup.names.append(s.name)
            sup.roles.add(s.name, "learner")
            self.joining[s.name] = req_id
            sup.starting[sup.launch(s.name, resume=False)] = s.name
            self.on_new_learner(s.name)
            print(f"attaching learner {s.name} (depth {s.critic_depth}) on table {s.table}", file=sys.stderr)

    def _check_resources(self, n: int, gpus: float) -> None:
        cpus = float(self.sup.config.get("cpus_per_role", 1.0)) * n
        free = self.sup.ray.available_resources()
        have_cpu, have_gpu = float(free.get("CPU", 0.0)), float(free.get("GPU", 0.0))
        if cpus > have_cpu + 1e-9 or gpus * n > have_gpu + 1e-9:
            raise ConfigError(
                f"{n} more learner(s) need {cpus:g} CPUs and {gpus * n:g} GPUs, but the Ray cluster has "
                f"{have_cpu:g} CPUs and {have_gpu:g} GPUs free; lower --gpus_per_learner or add nodes"
            )

    def started(self, name: str) -> bool:
        """A learner came up; True when it is one being attached (its data starts here)."""
        if name not in self.joining:
            return False
        sup, spec = self.sup, self.sup.learners[name]
        table = spec.table_name
        info = sup.ray.get(sup.handles["replay"].info.remote(), timeout=60)
        if sup.config.get("attach_warm_start", False):  # fed from the start: it has the collector's data
            sup.handles["replay"].stop_drain.remote(table)
            steps = sup.ray.get(sup.handles["collector"].ready.remote(), timeout=60)["env_steps"]
            self._joined(name, steps, steps - info[table]["num_inserts"] * sup.spec.segment_length)
            return True
        ref = sup.handles["collector"].set_tables.remote(list(sup.experiment.fed_tables))
        self.switches[ref] = (name, info[table]["num_inserts"])
        return True

    def _switched(self, ref) -> None:
        name, inserts = self.switches.pop(ref)
        if name in self.leaving:
            self.leaving[name]["switched"] = True
            self._left(name)
            return
        if name not in self.joining:
            return
        try:
            steps = self.sup.ray.get(ref)
        except Exception:  # the collector is being restarted: it is built with the new table already
            steps = self.sup.ray.get(self.sup.handles["collector"].ready.remote(), timeout=120)["env_steps"]
        self._joined(name, steps, steps - inserts * self.sup.spec.segment_length)

    def _joined(self, name: str, steps: int, offset: int) -> None:
        sup = self.sup
        spec = sup.learners[name] = dataclasses.replace(sup.learners[name], joined_at=int(steps))
        sup.experiment = sup.experiment.with_learners(added=[spec], removed=(name,))
        sup.ray.get(sup.handles[name].set_env_steps_offset.remote(offset, int(steps)), timeout=60)
        sup.roles.update(name, joined_at=int(steps), table=spec.table_name)
        self.record["attached"].append(spec.to_dict())
        self._save()
        sup.start_run(name)
        req_id = self.joining.pop(name)
        request = self.requests[req_id]
        request["done"][name] = {"table": spec.table_name, "joined_at_env_steps": int(steps)}
        if len(request["done"]) == len(request["names"]):
            self._answer(req_id, ok=True, learners=request["done"])

    # ---------------------------------------------------------------- detach
    def _detach(self, req_id: str, req: dict) -> None:
        sup, name = self.sup, str(req["role"])
        if name == sup.driving:
            raise ConfigError(
                f"{name} drives the collector and cannot be detached; detachable: "
                f"{', '.join(n for n in sup.names if n != sup.driving) or 'none'}"
            )
        if name not in sup.names or name in sup.results:
            live = [n for n in sup.names if n not in sup.results]
            raise ConfigError(f"no live learner named {name!r} in this run; live learners: {', '.join(live)}")
        if name in self.joining:
            raise ConfigError(f"{name} is still attaching; detach it once it trains")
        table = sup.learners[name].table_name
        sup.experiment = sup.experiment.with_learners(removed=(name,))
        self.switches[sup.handles["collector"].set_tables.remote(list(sup.experiment.fed_tables))] = (name, 0)
        self.leaving[name] = {"request": req_id, "switched": False, "finished": False, "result": None}
        sup.handles["replay"].drain.remote(table)  # the collector is never held back by a leaving learner
        sup.handles[name].stop.remote()
        self.requests[req_id]["names"] = [name]

    def finished(self, name: str, result) -> bool:
        """A learner's run returned; True when it was being detached."""
        if name not in self.leaving:
            return False
        self.leaving[name].update(finished=True, result=result)
        self.sup.results[name] = result
        self._left(name)
        return True

    def _left(self, name: str) -> None:
        """Once the learner has finished and the collector no longer writes to its table: empty it."""
        leaving = self.leaving[name]
        if not (leaving["finished"] and leaving["switched"]):
            return
        del self.leaving[name]
        sup, req_id, result = self.sup, leaving["request"], leaving["result"]
        spec = sup.learners.pop(name)
        sup.names.remove(name)
        sup.detached.append(spec)
        sup.handles["replay"].reset.remote(spec.table_name)  # its writes ended with its request
        if sup.config.get("attach_warm_start", False):
            sup.handles["replay"].drain.remote(spec.table_name)  # a free spare stays fed, and drained
        sup.roles.update(name, status="detached")
        self.record["attached"] = [r for r in self.record["attached"] if r["name"] != name]
        self.record["detached"].append({**spec.to_dict(), "result": result})
        self._save()
        self._answer(req_id, ok=True, result=result)
        print(f"detached learner {name}: {json.dumps(result, default=str)}", file=sys.stderr)
