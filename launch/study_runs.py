"""A study's runs: definition, persistent state (``study.json``), and scheduling them as Ray tasks.

Each run is a Ray task that executes ``run_single`` or ``run_distributed`` in a
worker, queued as the cluster's CPUs/GPUs allow. The state file records every
run's state so a re-run of the same command skips finished runs and resumes the
unfinished ones.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import ray
from ml_collections import ConfigDict

from deepcrl.configs.experiment import resolve
from deepcrl.configs.studies import Run, base_config, get_study
from deepcrl.configs.validation import ConfigError, apply_override
from deepcrl.launch import cluster
from deepcrl.launch.cli import UsageError
from deepcrl.launch.dispatch import run_experiment
from deepcrl.rundir.metrics import HEADLINE

STATE_FILE = "study.json"


# ----------------------------------------------------------------------------- definition


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(f"--{flag} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise UsageError(f"--{flag} lists no values: {text!r}")
    return values


def parse_seeds(text: str) -> list[int]:
    """'3' → [0, 1, 2]; '0,5' → [0, 5]; '7,' → [7]."""
    values = parse_ints(text, "seeds")
    if "," not in text:
        if values[0] <= 0:
            raise UsageError(f"--seeds count must be positive, got {text!r}")
        return list(range(values[0]))
    if len(set(values)) != len(values) or min(values) < 0:
        raise UsageError(f"--seeds must list distinct non-negative seeds, got {text!r}")
    return values


def build_definition(
    study: str, scale: str, envs: list[str] | None, seeds: list[int], options: dict, sets: list[str]
) -> tuple[dict, dict[str, ConfigDict]]:
    """(the study's definition as stored in study.json, run name → full config)."""
    try:
        module = get_study(study)
    except ValueError as e:
        raise UsageError(str(e)) from None
    envs = envs or list(module.DEFAULT_ENVS[scale])
    if len(set(envs)) != len(envs):
        raise UsageError(f"--envs lists an env twice: {','.join(envs)}")
    opts = {**module.DEFAULT_OPTIONS[scale], **options}

    def base(env: str) -> ConfigDict:
        try:
            c = base_config(scale, env, getattr(module, "CPU_MAZE_RUN", None))
        except ValueError as e:
            raise UsageError(f"env {env}: {e}") from None
        for item in sets:
            try:
                apply_override(c, item)
            except ValueError as e:
                raise UsageError(str(e)) from None
        return c

    try:
        runs: list[Run] = module.get_runs(envs, seeds, scale, opts, base)
    except ValueError as e:
        raise UsageError(str(e)) from None
    varied = {k for r in runs for k in r.overrides}
    for item in sets:
        key = item.partition("=")[0]
        if key in varied or key == "run_dir":
            hint = {"env": " (use --envs)", "seed": " (use --seeds)"}.get(key, "")
            raise UsageError(f"--set {key} conflicts with the {study} study, which sets {key} per run{hint}")
    configs = {}
    for r in runs:
        c = base(r.overrides["env"])
        c.update(r.overrides)
        configs[r.name] = c
    definition = {
        "study": study,
        "scale": scale,
        "envs": envs,
        "seeds": seeds,
        "options": opts,
        "set": list(sets),
        "runs": [{"name": r.name, "overrides": r.overrides, "condition": r.condition} for r in runs],
    }
    return json.loads(json.dumps(definition)), configs


def validate_runs(configs: dict[str, ConfigDict]) -> None:
    """Every run's config must be valid before anything is launched (envs are built once each)."""
    for name, c in configs.items():
        try:
            resolve(c)
        except ConfigError as e:
            raise UsageError(f"run {name}: {e}") from None


# ----------------------------------------------------------------------------- state


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def load_state(study_dir: Path) -> dict | None:
    path = study_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e}); move it away to start the study afresh") from None


def save_state(study_dir: Path, state: dict) -> None:
    """Atomic write: a study killed mid-write keeps its previous state file."""
    session = state["sessions"][-1] if state.get("sessions") else None
    if session and "started_unix" in session:
        session["wall_time_s"] = round(time.time() - session["started_unix"], 1)
    tmp = study_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, study_dir / STATE_FILE)


def definition_diff(old: dict, new: dict) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def run_dir_of(study_dir: Path, name: str) -> Path:
    return study_dir / "runs" / name


def is_finished(run_dir: Path, topology: str) -> bool:
    """A run is done when its runtime wrote its end-of-run file."""
    return (run_dir / ("complete.json" if topology == "single" else "summary.json")).exists()


def topology_of(run: dict) -> str:
    return run["overrides"].get("topology", "single")


# ----------------------------------------------------------------------------- hardware


def hardware() -> dict:
    """What this (driver) machine has: CPU model, cores, GPUs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            gpus = [g.strip() for g in out.stdout.splitlines() if g.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "gpus": gpus}


# ----------------------------------------------------------------------------- execution


def execute_run(config_dict: dict, run_dir: str, seed_dirs: list[str] | None = None) -> dict:
    """Body of one Ray task: run to the end, resuming from the run's checkpoints if it has any
    (single: checkpoints/latest; distributed: every role's checkpoint and the replay's).

    With ``seed_dirs`` the task is a group of runs that differ only in seed, trained
    as one ``num_seeds`` program: each seed writes its own run's directory, and the
    result carries each seed's final row in ``per_seed``.

    The worker's stdout/stderr go to ``RUN_DIR/study_task.log`` so concurrent
    runs do not interleave on the study's console.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config = ConfigDict(config_dict)
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path / "study_task.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    started = time.time()
    try:
        print(f"--- {now()} attempt on {platform.node()}", flush=True)
        if config.topology != "single":
            # Reuse this worker's Ray connection: with an address set, run_distributed never shuts Ray down.
            config.ray_address = ray.get_runtime_context().gcs_address
        dirs = [Path(d) for d in seed_dirs] if seed_dirs else None
        row = run_experiment(resolve(config), path, resume=True, progress=False, seed_dirs=dirs)

        devices = sorted({f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()})
        keys = ("env_steps", *HEADLINE)
        per_seed = [json.loads((Path(d) / "complete.json").read_text()) for d in seed_dirs or []]
        return {
            "final": {k: (row or {}).get(k) for k in keys},
            **({"per_seed": [{k: r.get(k) for k in keys} for r in per_seed]} if seed_dirs else {}),
            "wall_time_s": round(time.time() - started, 1),
            "host": platform.node(),
            "devices": devices,
        }
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)


def run_needs(config: ConfigDict, gpus_per_run: float) -> tuple[float, float]:
    """(CPUs, GPUs) one run occupies: its experiment's CPUs (``Experiment.resources``), the study's GPUs."""
    return resolve(config).resources()[0], gpus_per_run


def assign_role_gpus(config: ConfigDict, gpus_per_run: float) -> None:
    """Split a distributed run's GPU share over its collector and learners (unless the config set them)."""
    if config.topology == "single" or not gpus_per_run:
        return
    if config.gpus_per_collector or config.gpus_per_learner:
        return
    share = gpus_per_run / (1 + len(resolve(config).learners))
    config.gpus_per_collector = config.gpus_per_learner = share


def connect(address: str | None, num_cpus: int):
    """Embedded local Ray sized for the study, or the cluster at ``address``; the runs' output goes to
    their own logs, not the study's console."""
    try:
        return cluster.connect(address, num_cpus=num_cpus, log_to_driver=False)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _error_text(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1].strip() if lines else ''}"[:2000]


def schedule(
    ray, todo: list[dict], configs: dict[str, ConfigDict], state: dict, study_dir: Path, limits: dict
) -> None:
    """Launch runs in definition order as CPUs/GPUs free up; record each state change.

    With ``limits["seeds_in_one_program"]`` the ``single`` runs that differ only in
    (consecutive) seeds go as one task, one K-seed program (``seed_groups``).
    """
    remote = ray.remote(execute_run)
    total = len(state["runs"])
    queue = seed_groups(todo, configs) if limits.get("seeds_in_one_program") else [[r] for r in todo]
    inflight: dict = {}  # ref → (names, cpus, gpus)
    used = [0.0, 0.0]

    def fits(cpus: float, gpus: float) -> bool:
        if not inflight:
            return True
        if limits["max_concurrent"] and len(inflight) >= limits["max_concurrent"]:
            return False
        return used[0] + cpus <= limits["cpus"] + 1e-9 and used[1] + gpus <= limits["gpus"] + 1e-9

    try:
        while queue or inflight:
            while queue:
                names = [r["name"] for r in queue[0]]
                name = names[0]
                config = configs[name] if len(names) == 1 else group_config(names, configs, study_dir)
                cpus, gpus = run_needs(config, limits["gpus_per_run"])
                if not fits(cpus, gpus):
                    break
                queue.pop(0)
                rd = run_dir_of(study_dir, name) if len(names) == 1 else Path(config.run_dir)
                seed_dirs = [configs[n].run_dir for n in names] if len(names) > 1 else None
                opts = _task_options(config, cpus, gpus, limits)
                ref = remote.options(**opts).remote(config.to_dict(), str(rd), seed_dirs)
                inflight[ref] = (names, cpus, gpus)
                used[0] += cpus
                used[1] += gpus
                _record_started(state, names, study_dir, total)
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=2.0)
            for ref in ready:
                names, cpus, gpus = inflight.pop(ref)
                used[0] -= cpus
                used[1] -= gpus
                try:
                    group_result = ray.get(ref)
                except Exception as e:  # the run's own error, or its worker died
                    _record_failed(state, names, e)
                else:
                    _record_done(state, names, group_result, total)
                save_state(study_dir, state)
    except KeyboardInterrupt:
        for ref, (names, _, _) in inflight.items():
            ray.cancel(ref, force=True)
            for name in names:
                state["runs"][name].update(state="pending", error="interrupted")
        save_state(study_dir, state)
        raise


def _task_options(config: ConfigDict, cpus: float, gpus: float, limits: dict) -> dict:
    """Ray options of one run's task: a ``single`` run holds its CPUs and GPUs itself (a distributed
    run's roles hold theirs), and GPU runs sharing a GPU cap JAX's preallocation to their share."""
    opts: dict = {"max_retries": 0, "num_cpus": cpus if config.topology == "single" else 0}
    env_vars = dict(limits["env_vars"])  # inherited by a distributed run's roles too
    if config.topology == "single" and gpus:
        opts["num_gpus"] = gpus
        if gpus < 1:
            env_vars["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(0.95, 0.9 * gpus):.3f}"
    if env_vars:
        opts["runtime_env"] = {"env_vars": env_vars}
    return opts


def _record_started(state: dict, names: list[str], study_dir: Path, total: int) -> None:
    for n in names:
        record = state["runs"][n]
        record.update(state="running", started=now(), started_unix=time.time(), error=None)
        record["attempts"] = record.get("attempts", 0) + 1
    save_state(study_dir, state)
    together = f" + {len(names) - 1} more seeds in one program" if len(names) > 1 else ""
    print(
        f"[{count_state(state, 'done')}/{total} done] start {names[0]}{together} (attempt {record['attempts']})",
        flush=True,
    )


def _record_failed(state: dict, names: list[str], error: BaseException) -> None:
    for name in names:
        record = state["runs"][name]
        record.update(state="failed", error=_error_text(error), finished=now())
        record.pop("started_unix", None)
        print(f"run {name} FAILED: {record['error']}", flush=True)


def _record_done(state: dict, names: list[str], group_result: dict, total: int) -> None:
    for name, result in zip(names, split_result(group_result, len(names)), strict=True):
        record = state["runs"][name]
        record.update(state="done", finished=now(), **result)
        record["wall_time_s"] = round(record.get("wall_time_s_before", 0.0) + result["wall_time_s"], 1)
        tag, success = result["final"].get("eval/time_at_goal"), result["final"].get("eval/success")
        extra = f", time at goal {tag:.1f}" if isinstance(tag, float) else ""
        extra += f", success {success:.3f}" if isinstance(success, float) else ""
        print(f"[{count_state(state, 'done')}/{total} done] {name} in {result['wall_time_s']:.0f}s{extra}")
        record.pop("started_unix", None)


def seed_groups(todo: list[dict], configs: dict[str, ConfigDict]) -> list[list[dict]]:
    """``todo`` as groups: ``single`` runs whose configs differ only in consecutive seeds share one.

    A group is trained as one K-seed program (``--num_seeds``); any other run is a group of one.
    Groups keep the definition order of their first run.
    """
    shapes: dict[str, list[dict]] = {}
    order: list[list[dict]] = []
    for run in todo:
        c = configs[run["name"]]
        if c.topology != "single":
            order.append([run])
            continue
        shape = json.dumps(
            {k: v for k, v in c.to_dict().items() if k not in ("seed", "run_dir")}, sort_keys=True
        )
        if shape not in shapes:
            shapes[shape] = []
            order.append(shapes[shape])
        shapes[shape].append(run)
    groups = []
    for runs in order:
        runs = sorted(runs, key=lambda r: int(configs[r["name"]].seed))
        chunk = [runs[0]]
        for run in runs[1:]:
            if int(configs[run["name"]].seed) == int(configs[chunk[-1]["name"]].seed) + 1:
                chunk.append(run)
            else:
                groups.append(chunk)
                chunk = [run]
        groups.append(chunk)
    return groups


def group_config(names: list[str], configs: dict[str, ConfigDict], study_dir: Path) -> ConfigDict:
    """The K-seed run of a seed group: the first (lowest) seed's config, ``num_seeds = K``."""
    c = ConfigDict(configs[names[0]].to_dict())
    c.num_seeds = len(names)
    c.run_dir = str(study_dir / "seed_groups" / names[0])
    return c


def split_result(result: dict, k: int) -> list[dict]:
    """A group task's result → one per seed: its own final row and 1/K of the wall time."""
    if k == 1:
        return [result]
    common = {key: v for key, v in result.items() if key != "per_seed"}
    return [
        {
            **common,
            "final": final,
            "wall_time_s": round(result["wall_time_s"] / k, 1),
            "seeds_in_one_program": k,
        }
        for final in result["per_seed"]
    ]


def count_state(state: dict, what: str) -> int:
    return sum(1 for r in state["runs"].values() if r["state"] == what)


def reconcile(state: dict, definition: dict, study_dir: Path) -> list[dict]:
    """Mark runs whose end-of-run file exists as done; return the rest, to (re)start.

    A run whose attempt was killed or interrupted keeps the time that attempt spent
    (up to its run directory's last write) in ``wall_time_s_before``.
    """
    todo = []
    for run in definition["runs"]:
        name = run["name"]
        record = state["runs"].setdefault(name, {"state": "pending", "attempts": 0})
        rd = run_dir_of(study_dir, name)
        record["run_dir"] = str(rd.relative_to(study_dir))
        if is_finished(rd, topology_of(run)):
            if record["state"] != "done":
                record.update(state="done", error=None)
            record.pop("started_unix", None)
            continue
        if "started_unix" in record:  # its last attempt was killed or interrupted
            last_write = max((p.stat().st_mtime for p in rd.rglob("*") if p.is_file()), default=0.0)
            spent = max(0.0, last_write - record["started_unix"])
            # every run resumes from its checkpoints, so it keeps what it already spent
            record["wall_time_s_before"] = round(record.get("wall_time_s_before", 0.0) + spent, 1)
        record.pop("started_unix", None)
        if record["state"] != "failed":
            record["state"] = "pending"
        todo.append(run)
    return todo
