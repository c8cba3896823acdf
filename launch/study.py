"""Paper experiments, one command each: ``python launch/study.py --study depth_sweep --scale cpu``.

A study (``configs/studies/``) expands to runs; each run is a Ray task that
executes ``run_single`` or ``run_distributed`` in a worker, queued and run
concurrently as the cluster's CPUs/GPUs allow (embedded local Ray, or
``--ray_address``). ``STUDY_DIR/study.json`` records the definition and each
run's state, so re-running the same command skips finished runs and resumes
unfinished ones from their last checkpoint. Every session ends by writing
``report.md``, ``curves.csv`` and plots. Bad input: one ``error:`` line, exit 2.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import ConfigDict

from deepcrl.configs.resolve import apply_override
from deepcrl.configs.studies import SCALES, STUDIES, Run, base_config, get_study
from deepcrl.launch.cli import UsageError, run_main

FLAGS = flags.FLAGS
flags.DEFINE_string("study", None, f"Study to run: {' | '.join(STUDIES)}")
flags.DEFINE_string("study_dir", None, "Where the study lives (default runs/studies/<study>-<scale>)")
flags.DEFINE_string("envs", None, "Comma-separated envs (default: the study's envs for --scale)")
flags.DEFINE_string("seeds", "3", "A count (3 → seeds 0,1,2) or a comma list (0,5 or 7,)")
flags.DEFINE_enum("scale", "paper", list(SCALES), "paper: the paper's per-env settings; cpu: tiny runs")
flags.DEFINE_string("depths", None, "Depths the study compares (default: the study's), e.g. 4,8,16")
flags.DEFINE_string("batch_sizes", None, "batch_sweep only: batch sizes, e.g. 256,1024,4096")
flags.DEFINE_multi_string("set", [], "Override a config field in every run: --set num_evals=20")
flags.DEFINE_string(
    "ray_address", None, "Join an existing Ray cluster at HOST:PORT (default: embedded local Ray)"
)
flags.DEFINE_integer("max_concurrent", 0, "Most runs at once (0: as many as the cluster's CPUs/GPUs allow)")
flags.DEFINE_float("gpus_per_run", None, "GPUs per run (default 1 if the cluster has GPUs, else 0)")
flags.DEFINE_bool("report_only", False, "Only rewrite the report from what STUDY_DIR holds")
flags.DEFINE_bool("dry_run", False, "Validate every run's config, list the runs, and exit without running")
flags.DEFINE_string(
    "compilation_cache",
    None,
    "JAX persistent compilation cache shared by the runs (default STUDY_DIR/jax_cache; '' off)",
)

STATE_FILE = "study.json"
DPI = 100
PANEL_IN = (4.0, 3.4)  # inches per plot panel
METRICS = (
    ("final_success", "final success"),
    ("time_at_goal", "time at goal"),
    ("env_steps", "env steps"),
    ("wall_time_s", "wall time (s)"),
)
COVERAGE = ("coverage/cells_visited_frac", "coverage/goal_spread")
CURVE_COLUMNS = (
    "env_steps", "updates", "wall_time", "eval/success", "eval/time_at_goal", "eval/final_distance",
    *COVERAGE,
)  # fmt: skip


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
            c = base_config(scale, env)
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
    from deepcrl.configs.resolve import ConfigError, build_env, validate
    from deepcrl.configs.topologies import resolve_roles

    envs: dict[tuple, Any] = {}
    for name, c in configs.items():
        try:
            key = (c.env, c.backend, int(c.episode_length))
            if key not in envs:
                envs[key] = build_env(c)
            validate(c, envs[key])
            if c.topology != "single":
                resolve_roles(c)
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


def execute_run(config_dict: dict, run_dir: str) -> dict:
    """Body of one Ray task: run to the end (single resumes from checkpoints/latest).

    The worker's stdout/stderr go to ``RUN_DIR/study_task.log`` so concurrent
    runs do not interleave on the study's console.
    """
    import ray

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
        if config.topology == "single":
            from deepcrl.launch.single import run_single

            row = run_single(config, path, progress=False, resume=True)
        else:
            from deepcrl.launch.distributed import run_distributed

            # Reuse this worker's Ray connection: with an address set, run_distributed never shuts Ray down.
            config.ray_address = ray.get_runtime_context().gcs_address
            row = run_distributed(config, path)
        import jax

        devices = sorted({f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()})
        return {
            "final": {k: (row or {}).get(k) for k in ("env_steps", "eval/success", "eval/time_at_goal")},
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
    """(CPUs, GPUs) one run occupies: 1 process for single; replay + collector + learners otherwise."""
    if config.topology == "single":
        return 1.0, gpus_per_run
    from deepcrl.configs.topologies import resolve_roles

    _, learners = resolve_roles(config)
    return 2.0 + len(learners), gpus_per_run


def assign_role_gpus(config: ConfigDict, gpus_per_run: float) -> None:
    """Split a distributed run's GPU share over its collector and learners (unless the config set them)."""
    if config.topology == "single" or not gpus_per_run:
        return
    if config.gpus_per_collector or config.gpus_per_learner:
        return
    from deepcrl.configs.topologies import resolve_roles

    _, learners = resolve_roles(config)
    share = gpus_per_run / (1 + len(learners))
    config.gpus_per_collector = config.gpus_per_learner = share


def connect(address: str | None, num_cpus: int):
    """Embedded local Ray sized for the study, or the cluster at ``address``."""
    import ray

    if address:
        from deepcrl.configs.resolve import ConfigError
        from deepcrl.launch.distributed import connect_ray

        try:
            return connect_ray(address)
        except ConfigError as e:
            raise UsageError(str(e)) from None
    env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}}
    # Ray fork-execs its daemons; JAX (imported to count parameters) warns about any fork.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    ray.init(
        address="local",  # always a fresh embedded cluster, never one a `ray start` left behind
        num_cpus=num_cpus,
        include_dashboard=False,
        runtime_env=env,
        logging_level="ERROR",
        log_to_driver=False,
    )
    return ray


def _error_text(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1].strip() if lines else ''}"[:2000]


def schedule(
    ray, todo: list[dict], configs: dict[str, ConfigDict], state: dict, study_dir: Path, limits: dict
) -> None:
    """Launch runs in definition order as CPUs/GPUs free up; record each state change."""
    remote = ray.remote(execute_run)
    total = len(state["runs"])
    queue = list(todo)
    inflight: dict = {}  # ref → (name, cpus, gpus)
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
                run = queue[0]
                name = run["name"]
                config = configs[name]
                cpus, gpus = run_needs(config, limits["gpus_per_run"])
                if not fits(cpus, gpus):
                    break
                queue.pop(0)
                record = state["runs"][name]
                rd = run_dir_of(study_dir, name)
                if config.topology != "single" and rd.exists():
                    shutil.rmtree(rd)  # a distributed run cannot resume: start it clean
                opts: dict = {"max_retries": 0, "num_cpus": cpus if config.topology == "single" else 0}
                env_vars = dict(limits["env_vars"])  # inherited by a distributed run's roles too
                if config.topology == "single" and gpus:
                    opts["num_gpus"] = gpus
                    if gpus < 1:  # several runs share a GPU: cap JAX's preallocation to this run's share
                        env_vars["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(0.95, 0.9 * gpus):.3f}"
                if env_vars:
                    opts["runtime_env"] = {"env_vars": env_vars}
                ref = remote.options(**opts).remote(config.to_dict(), str(rd))
                inflight[ref] = (name, cpus, gpus)
                used[0] += cpus
                used[1] += gpus
                record.update(state="running", started=now(), started_unix=time.time(), error=None)
                record["attempts"] = record.get("attempts", 0) + 1
                save_state(study_dir, state)
                print(
                    f"[{_count(state, 'done')}/{total} done] start {name} (attempt {record['attempts']})",
                    flush=True,
                )
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=2.0)
            for ref in ready:
                name, cpus, gpus = inflight.pop(ref)
                used[0] -= cpus
                used[1] -= gpus
                record = state["runs"][name]
                try:
                    result = ray.get(ref)
                except Exception as e:  # the run's own error, or its worker died
                    record.update(state="failed", error=_error_text(e), finished=now())
                    print(f"run {name} FAILED: {record['error']}", flush=True)
                else:
                    record.update(state="done", finished=now(), **result)
                    record["wall_time_s"] = round(
                        record.get("wall_time_s_before", 0.0) + result["wall_time_s"], 1
                    )
                    success = result["final"].get("eval/success")
                    extra = f", success {success:.3f}" if isinstance(success, float) else ""
                    print(
                        f"[{_count(state, 'done')}/{total} done] {name} in {result['wall_time_s']:.0f}s{extra}"
                    )
                record.pop("started_unix", None)
                save_state(study_dir, state)
    except KeyboardInterrupt:
        for ref, (name, _, _) in inflight.items():
            ray.cancel(ref, force=True)
            state["runs"][name].update(state="pending", error="interrupted")
        save_state(study_dir, state)
        raise


def _count(state: dict, what: str) -> int:
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
            if topology_of(run) == "single":  # only a resumable run keeps what it already spent
                record["wall_time_s_before"] = round(record.get("wall_time_s_before", 0.0) + spent, 1)
        record.pop("started_unix", None)
        if record["state"] != "failed":
            record["state"] = "pending"
        todo.append(run)
    return todo


# ----------------------------------------------------------------------------- report


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the 95 % Student-t interval); no interval from one value."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), None
    if len(v) == 1:
        return float(v[0]), None
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()), half


def collect(study_dir: Path, definition: dict, state: dict) -> tuple[list[dict], list[dict]]:
    """(one result per finished run and learner, every curve row) read back from the run directories."""
    from deepcrl.rundir.metrics import read_metrics

    results, curves = [], []
    for run in definition["runs"]:
        name, rd = run["name"], run_dir_of(study_dir, run["name"])
        topology = topology_of(run)
        if not is_finished(rd, topology):
            continue
        record = state["runs"].get(name, {})
        base = {"run": name, "seed": run["overrides"]["seed"], **run["condition"]}
        if topology == "single":
            roles = [("agent", int(run["overrides"].get("critic_depth", 0)), rd / "metrics.jsonl")]
            coverage_row = json.loads((rd / "complete.json").read_text())
        else:
            summary = json.loads((rd / "summary.json").read_text())
            roles = [
                (
                    "collector agent" if r["learner"] == "collector_learner" else "train-only",
                    int(r["depth"]),
                    rd / r["learner"] / "metrics.jsonl",
                )
                for r in summary["learners"]
            ]
            coverage_row = summary.get("collector") or {}
            for row in read_metrics(rd / "collector" / "metrics.jsonl"):
                curves.append({**base, "learner": "collector", **{c: row.get(c) for c in CURVE_COLUMNS}})
        for role, depth, path in roles:
            rows = read_metrics(path)
            evals = [r for r in rows if "eval/success" in r]
            if not evals:
                continue
            final = evals[-1]
            extra = {} if topology == "single" else {"learner": role, "learner_depth": depth}
            results.append(
                {
                    **base,
                    **extra,
                    "final_success": final.get("eval/success"),
                    "time_at_goal": final.get("eval/time_at_goal"),
                    "env_steps": final.get("env_steps"),
                    "wall_time_s": record.get("wall_time_s"),
                    **{c: coverage_row.get(c) for c in COVERAGE},
                }
            )
            for row in evals:
                curves.append({**base, **extra, **{c: row.get(c) for c in CURVE_COLUMNS}})
    return results, curves


def _order(key: tuple) -> tuple:
    """Numbers numerically (4 before 32), then strings."""
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in key)


def group(results: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in results:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def _fmt(mean: float, half: float | None, digits: int) -> str:
    if not math.isfinite(mean):
        return "—"
    text = f"{mean:.{digits}f}" if digits else f"{mean:,.0f}"
    if half is None:
        return text
    return text + f" ± {half:.{digits}f}" if digits else text + f" ± {half:,.0f}"


def condition_keys(results: list[dict]) -> tuple[str, ...]:
    skip = {"run", "seed", "final_success", "time_at_goal", "env_steps", "wall_time_s", *COVERAGE}
    keys: list[str] = []
    for r in results:
        keys += [k for k in r if k not in skip and k not in keys]
    return tuple(keys)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(results: list[dict]) -> str:
    keys = condition_keys(results)
    rows = []
    for cond, items in group(results, keys).items():
        cells = [str(c) for c in cond] + [str(len(items))]
        for metric, _ in METRICS:
            digits = 0 if metric in ("env_steps", "wall_time_s") else 3
            cells.append(_fmt(*t_interval([r[metric] for r in items]), digits))
        rows.append(cells)
    return markdown_table([*keys, "seeds", *(label for _, label in METRICS)], rows)


def coverage_table(results: list[dict], by: str) -> str:
    per_run = {r["run"]: r for r in results}.values()  # coverage belongs to the run's collector
    rows = []
    for (env, value), items in sorted(
        group(list(per_run), ("env", by)).items(), key=lambda kv: _order(kv[0])
    ):
        cells = [env, str(value), str(len(items))]
        cells += [_fmt(*t_interval([r[c] for r in items]), 3) for c in COVERAGE]
        rows.append(cells)
    label = "collector depth" if by == "collector_depth" else by
    return markdown_table(["env", label, "seeds", "cells visited (frac)", "goal spread"], rows)


def decoupling_grid(results: list[dict]) -> str:
    """The paper's 2×2: rows collector depth, columns train-only learner depth, per env."""
    parts = []
    trained = [r for r in results if r.get("learner") == "train-only"]
    for env in dict.fromkeys(r["env"] for r in trained):
        rs = [r for r in trained if r["env"] == env]
        collectors = sorted({r["collector_depth"] for r in rs}, reverse=True)
        learners = sorted({r["learner_depth"] for r in rs}, reverse=True)
        cells = group(rs, ("collector_depth", "learner_depth"))
        rows = [
            [f"collector d{c}"]
            + [_fmt(*t_interval([r["final_success"] for r in cells.get((c, ld), [])]), 3) for ld in learners]
            for c in collectors
        ]
        parts.append(f"**{env}** (final success of the train-only learners)\n\n")
        parts.append(markdown_table(["", *(f"learner d{ld}" for ld in learners)], rows) + "\n\n")
    return "".join(parts)


def figure_size(panels: int) -> tuple[float, float]:
    """Figure size in inches for ``panels`` env panels, three per row."""
    cols = min(max(panels, 1), 3)
    rows = math.ceil(max(panels, 1) / 3)
    return PANEL_IN[0] * cols, PANEL_IN[1] * rows


def _figure(envs: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figure_size(len(envs)), dpi=DPI)
    cols = min(max(len(envs), 1), 3)
    rows = math.ceil(max(len(envs), 1) / 3)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(len(envs), 1))]
    return plt, fig, axes


def _label(keys: tuple[str, ...], values: tuple) -> str:
    if keys == ("collector_depth", "learner", "learner_depth"):  # decoupling
        c, role, d = values
        return f"collector agent d{d}" if role == "collector agent" else f"collector d{c} → learner d{d}"
    short = {
        "depth": "d",
        "batch_size": "batch ",
        "collector_depth": "collector d",
        "learner_depth": "d",
        "width": "w",
    }
    return " ".join(
        f"{short.get(k, '')}{v}" if k in short else str(v) for k, v in zip(keys, values, strict=True)
    )


def _log2_axis(ax, values: list) -> None:
    """Log-2 x axis labelled with the study's own values (4, 8, 16 … or 1.2M parameters)."""
    values = sorted({v for v in values if v})
    ax.set_xscale("log", base=2)
    if values:
        ax.set_xticks(values, [f"{v / 1e6:.2g}M" if v >= 1e5 else f"{v:g}" for v in values], fontsize=7)
        ax.minorticks_off()


def plot_curves(curves: list[dict], envs: list[str], keys: tuple[str, ...], out: Path, title: str) -> Path:
    """Success vs env steps: one panel per env, one line per condition (mean over seeds, 95 % band)."""
    import numpy as np

    plt, fig, axes = _figure(envs)
    for ax, env in zip(axes, envs, strict=False):
        rows = [c for c in curves if c["env"] == env and c.get("learner") != "collector"]
        for cond, items in sorted(group(rows, keys).items(), key=lambda kv: _order(kv[0])):
            seeds = group(items, ("run", "learner"))
            series = [sorted((r["env_steps"], r["eval/success"]) for r in s) for s in seeds.values()]
            xs = np.asarray([x for x, _ in max(series, key=len)], float)
            ys = np.stack([np.interp(xs, [p[0] for p in s], [p[1] for p in s]) for s in series])
            mean = ys.mean(0)
            (line,) = ax.plot(xs, mean, marker="o", markersize=3, label=_label(keys, cond))
            if len(series) > 1:
                half = np.asarray([t_interval(list(col))[1] or 0.0 for col in ys.T])
                ax.fill_between(xs, mean - half, mean + half, alpha=0.2, color=line.get_color())
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("env steps", fontsize=8)
        ax.set_ylabel("success (eval)", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def plot_final(
    results: list[dict], envs: list[str], x: str, lines: tuple[str, ...], out: Path, title: str
) -> Path:
    """Final success vs the study's variable (log2 axis), with 95 % t-interval error bars."""
    plt, fig, axes = _figure(envs)
    for ax, env in zip(axes, envs, strict=False):
        rs = [r for r in results if r["env"] == env]
        line_groups = group(rs, lines) if lines else {(): rs}
        base = [r for r in rs if r.get("scaled") == "base"]  # width_vs_depth: the base belongs to both lines
        for line, items in sorted(line_groups.items(), key=lambda kv: _order(kv[0])):
            if line == ("base",):
                continue
            if base and lines == ("scaled",):
                items = base + items
            points = sorted(group(items, (x,)).items())
            xs = [p[0][0] for p in points]
            stats = [t_interval([r["final_success"] for r in p[1]]) for p in points]
            ax.errorbar(
                xs,
                [s[0] for s in stats],
                yerr=[s[1] or 0.0 for s in stats],
                marker="o",
                capsize=3,
                label=f"scaled: {line[0]}" if lines == ("scaled",) else (_label(lines, line) or None),
            )
        if x == "params":  # matched budgets sit close together: plain log ticks, not one per value
            ax.set_xscale("log")
        else:
            _log2_axis(ax, [r[x] for r in rs])
        ax.set_title(env, fontsize=9)
        ax.set_xlabel({"params": "parameters (actor + critic)"}.get(x, x.replace("_", " ")), fontsize=8)
        ax.set_ylabel("final success", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(axis="y", labelsize=7)
        if lines:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def plot_grid(results: list[dict], envs: list[str], out: Path) -> Path:
    """Decoupling: bars of deep/shallow train-only learners under deep/shallow collectors, per env."""
    import numpy as np

    plt, fig, axes = _figure(envs)
    trained = [r for r in results if r.get("learner") == "train-only"]
    for ax, env in zip(axes, envs, strict=False):
        rs = [r for r in trained if r["env"] == env]
        collectors = sorted({r["collector_depth"] for r in rs}, reverse=True)
        learners = sorted({r["learner_depth"] for r in rs}, reverse=True)
        cells = group(rs, ("collector_depth", "learner_depth"))
        width = 0.8 / max(len(learners), 1)
        for j, ld in enumerate(learners):
            stats = [t_interval([r["final_success"] for r in cells.get((c, ld), [])]) for c in collectors]
            xs = np.arange(len(collectors)) + (j - (len(learners) - 1) / 2) * width
            means = [0.0 if not math.isfinite(s[0]) else s[0] for s in stats]
            ax.bar(xs, means, width, yerr=[s[1] or 0.0 for s in stats], capsize=3, label=f"learner d{ld}")
            for x, m in zip(xs, means, strict=True):
                ax.text(x, m + 0.02, f"{m:.2f}", ha="center", fontsize=7)
        ax.set_xticks(range(len(collectors)), [f"collector d{c}" for c in collectors], fontsize=8)
        ax.set_title(env, fontsize=9)
        ax.set_ylabel("final success", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("decoupling: train-only learners by collector depth", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def plot_coverage(results: list[dict], envs: list[str], by: str, out: Path) -> Path:
    """Exploration: fraction of free cells visited vs the collector's depth."""
    plt, fig, axes = _figure(envs)
    per_run = list({r["run"]: r for r in results}.values())
    for ax, env in zip(axes, envs, strict=False):
        points = sorted(group([r for r in per_run if r["env"] == env], (by,)).items())
        stats = [t_interval([r["coverage/cells_visited_frac"] for r in p[1]]) for p in points]
        ax.errorbar([p[0][0] for p in points], [s[0] for s in stats], yerr=[s[1] or 0.0 for s in stats],
                    marker="o", capsize=3)  # fmt: skip
        _log2_axis(ax, [p[0][0] for p in points])
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("collector depth", fontsize=8)
        ax.set_ylabel("cells visited (frac)", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.suptitle("exploration coverage", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def write_curves_csv(curves: list[dict], out: Path) -> Path:
    import csv

    fields: list[str] = []
    for c in curves:
        fields += [k for k in c if k not in fields]
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(curves)
    return out


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def write_report(study_dir: Path, state: dict) -> Path:
    """report.md, curves.csv and the plots, from whatever runs have finished."""
    definition = state["definition"]
    module = get_study(definition["study"])
    results, curves = collect(study_dir, definition, state)
    envs = definition["envs"]
    write_curves_csv(curves, study_dir / "curves.csv")
    figures = []
    if results:
        figures.append(plot_curves(curves, envs, module.CURVE_KEYS, study_dir / "success_curves.png",
                                   f"{definition['study']}: success vs env steps"))  # fmt: skip
        if module.FINAL_X:
            figures.append(plot_final(results, envs, module.FINAL_X, module.FINAL_LINES,
                                      study_dir / "final_success.png", f"{definition['study']}: final success"))  # fmt: skip
        else:
            figures.append(plot_grid(results, envs, study_dir / "decoupling_grid.png"))
        if module.COVERAGE_BY:
            figures.append(plot_coverage(results, envs, module.COVERAGE_BY, study_dir / "coverage.png"))

    runs = state["runs"]
    counts = {
        s: sum(1 for r in runs.values() if r["state"] == s) for s in ("done", "running", "pending", "failed")
    }
    sessions = state.get("sessions", [])
    total_wall = sum(s.get("wall_time_s", 0.0) for s in sessions)
    run_time = sum(r.get("wall_time_s", 0.0) or 0.0 for r in runs.values() if r["state"] == "done")
    lines = [
        f"# Study `{definition['study']}` (scale {definition['scale']})",
        "",
        module.DESCRIPTION,
        "",
        f"- envs: {', '.join(envs)}; seeds: {', '.join(map(str, definition['seeds']))}",
        f"- options: {json.dumps(definition['options'])}; --set: {' '.join(definition['set']) or 'none'}",
        f"- runs: {len(runs)} — " + ", ".join(f"{v} {k}" for k, v in counts.items() if v),
        f"- total wall time: {_hms(total_wall)} over {len(sessions)} session(s) of the study command; "
        f"the finished runs took {_hms(run_time)} summed (each from task start, compile included)",
        "",
        "## Hardware",
        "",
    ]
    for i, s in enumerate(sessions):
        hw = s.get("hardware", {})
        gpus = ", ".join(hw.get("gpus") or []) or "none"
        cluster = s.get("cluster", {})
        lines.append(
            f"- session {i + 1} ({s.get('started', '?')}, {_hms(s.get('wall_time_s', 0.0))}): driver {hw.get('host')}: "
            f"{hw.get('cpu')}, {hw.get('cores')} cores, GPUs: {gpus}; Ray cluster: "
            f"{cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs"
            f"{' (joined ' + s['ray_address'] + ')' if s.get('ray_address') else ' (embedded)'}"
        )
    devices = sorted(
        {f"{r.get('host')} ({', '.join(r.get('devices', []))})" for r in runs.values() if r.get("host")}
    )
    if devices:
        lines.append(f"- runs executed on: {'; '.join(devices)}")
    lines += [
        "",
        "## Results",
        "",
        "Mean over seeds ± the half-width of the 95 % Student-t interval (t with n−1 degrees of freedom; "
        "no interval with a single seed). Final success and time at goal are the last deterministic "
        "evaluation; env steps are those the learner had seen at that evaluation.",
        "",
        results_table(results) if results else "_no run has finished yet_",
        "",
    ]
    if definition["study"] == "decoupling" and results:
        lines += ["### Collector × learner grid", "", decoupling_grid(results)]
    if module.COVERAGE_BY and results:
        lines += [
            "## Exploration coverage",
            "",
            "Fraction of the free cells of a fixed x-y grid that the collector's states visited, and the spread "
            "(std) of the visited goal coordinates, at the end of each run (mean ± 95 % t-interval over seeds).",
            "",
            coverage_table(results, module.COVERAGE_BY),
            "",
        ]
    failed = {n: r for n, r in runs.items() if r["state"] == "failed"}
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{n}`: {r.get('error')}" for n, r in failed.items()] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    lines += ["All curves (one row per evaluation, every run and learner): `curves.csv`.", ""]
    out = study_dir / "report.md"
    out.write_text("\n".join(lines))
    return out


# ----------------------------------------------------------------------------- entry


def main(argv) -> int:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.study:
        raise UsageError(f"--study is required; valid studies: {', '.join(STUDIES)}")
    if FLAGS.study not in STUDIES:
        raise UsageError(f"unknown study {FLAGS.study!r}; valid studies: {', '.join(STUDIES)}")
    study_dir = Path(FLAGS.study_dir or f"runs/studies/{FLAGS.study}-{FLAGS.scale}").absolute()
    state = load_state(study_dir)
    if FLAGS.report_only:
        if state is None:
            raise UsageError(f"no {STATE_FILE} in {study_dir}: nothing to report")
        print(f"report: {write_report(study_dir, state)}")
        return 0

    options: dict[str, Any] = {}
    if FLAGS.depths:
        options["depths"] = parse_ints(FLAGS.depths, "depths")
    if FLAGS.batch_sizes:
        if FLAGS.study != "batch_sweep":
            raise UsageError("--batch_sizes applies only to --study batch_sweep")
        options["batch_sizes"] = parse_ints(FLAGS.batch_sizes, "batch_sizes")
    envs = [e for e in FLAGS.envs.split(",") if e] if FLAGS.envs else None
    if FLAGS.max_concurrent < 0:
        raise UsageError(f"--max_concurrent must be >= 0, got {FLAGS.max_concurrent}")
    if FLAGS.gpus_per_run is not None and FLAGS.gpus_per_run < 0:
        raise UsageError(f"--gpus_per_run must be >= 0, got {FLAGS.gpus_per_run}")
    definition, configs = build_definition(
        FLAGS.study, FLAGS.scale, envs, parse_seeds(FLAGS.seeds), options, list(FLAGS.set)
    )
    if state is not None and state.get("definition") != definition:
        diff = ", ".join(definition_diff(state.get("definition") or {}, definition))
        raise UsageError(
            f"{study_dir / STATE_FILE} holds a different study definition (differs in: {diff}); "
            "re-run with the same flags, or use another --study_dir"
        )
    validate_runs(configs)
    if FLAGS.dry_run:
        for run in definition["runs"]:
            c = configs[run["name"]]
            print(
                f"{run['name']}: {c.topology}, {c.total_env_steps:,} env steps, {json.dumps(run['overrides'])}"
            )
        print(f"{len(configs)} runs would be written to {study_dir}")
        return 0
    cache = str(study_dir / "jax_cache") if FLAGS.compilation_cache is None else FLAGS.compilation_cache
    if cache:  # runs of the same shape (every seed of a condition) compile once
        cache = str(Path(cache).absolute())
    for name, c in configs.items():
        c.run_dir = str(run_dir_of(study_dir, name))
    study_dir.mkdir(parents=True, exist_ok=True)
    state = state or {"definition": definition, "runs": {}, "sessions": []}
    todo = reconcile(state, definition, study_dir)
    session = {"started": now(), "started_unix": time.time(), "hardware": hardware()}
    state["sessions"].append(session)
    save_state(study_dir, state)
    print(
        f"study {FLAGS.study}: {len(configs)} runs, {len(configs) - len(todo)} already done; dir {study_dir}"
    )

    ray = None
    interrupted = False
    try:
        if todo:
            biggest = max(run_needs(configs[r["name"]], 0.0)[0] for r in todo)
            num_cpus = max(os.cpu_count() or 1, int(biggest) * max(1, FLAGS.max_concurrent))
            ray = connect(FLAGS.ray_address, num_cpus)
            cluster = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
            session.update(cluster=cluster, ray_address=FLAGS.ray_address or "")
            gpus = FLAGS.gpus_per_run
            if gpus is None:
                gpus = 1.0 if cluster.get("GPU", 0) > 0 else 0.0
            biggest_run = max(todo, key=lambda r: run_needs(configs[r["name"]], 0.0)[0])["name"]
            need = run_needs(configs[biggest_run], 0.0)[0]
            if need > cluster.get("CPU", 0):
                raise UsageError(
                    f"run {biggest_run} needs {need:g} CPUs (replay, collector and each learner take one) "
                    f"but the Ray cluster has {cluster.get('CPU', 0):g}"
                )
            if gpus > cluster.get("GPU", 0):
                raise UsageError(
                    f"--gpus_per_run {gpus:g} but the Ray cluster has {cluster.get('GPU', 0):g} GPUs"
                )
            for c in configs.values():
                assign_role_gpus(c, gpus)
            limits = {
                "cpus": cluster.get("CPU", 1.0),
                "gpus": cluster.get("GPU", 0.0),
                "gpus_per_run": gpus,
                "max_concurrent": FLAGS.max_concurrent,
                "env_vars": {"JAX_COMPILATION_CACHE_DIR": cache} if cache else {},
            }
            schedule(ray, todo, configs, state, study_dir, limits)
    except KeyboardInterrupt:
        interrupted = True
        print(
            "\ninterrupted: unfinished runs stay resumable; re-run the same command to continue",
            file=sys.stderr,
        )
    finally:
        save_state(study_dir, state)
        if ray is not None and not FLAGS.ray_address:
            ray.shutdown()
    report = write_report(study_dir, state)
    failed = _count(state, "failed")
    print(f"report: {report}")
    if interrupted:
        return 130
    if failed:
        print(
            f"error: {failed} run(s) failed; see {report} — re-running the command retries them",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
