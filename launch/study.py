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

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import ConfigDict

from deepcrl.configs.studies import SCALES, STUDIES
from deepcrl.launch.cli import UsageError, check_writable_dir, run_main
from deepcrl.launch.study_report import write_report
from deepcrl.launch.study_runs import (
    STATE_FILE,
    assign_role_gpus,
    build_definition,
    connect,
    count_state,
    definition_diff,
    hardware,
    load_state,
    now,
    parse_ints,
    parse_seeds,
    reconcile,
    run_dir_of,
    run_needs,
    save_state,
    schedule,
    validate_runs,
)
from deepcrl.rundir.metrics import publish_to_wandb, wandb_mode, wandb_problem

FLAGS = flags.FLAGS
flags.DEFINE_string("study", None, f"Study to run: {' | '.join(STUDIES)}")
flags.DEFINE_string("study_dir", None, "Where the study lives (default runs/studies/<study>-<scale>)")
flags.DEFINE_string("envs", None, "Comma-separated envs (default: the study's envs for --scale)")
flags.DEFINE_string("seeds", "3", "A count (3 → seeds 0,1,2) or a comma list (0,5 or 7,)")
flags.DEFINE_enum("scale", "paper", list(SCALES), "paper: the paper's per-env settings; cpu: tiny runs")
flags.DEFINE_string("depths", None, "Depths the study compares (default: the study's), e.g. 4,8,16")
flags.DEFINE_string("batch_sizes", None, "batch_sweep only: batch sizes, e.g. 256,1024,4096")
flags.DEFINE_multi_string("set", [], "Override a config field in every run: --set num_evals=20")
flags.DEFINE_string("tag", None, "A short label of the study, recorded in every run and shown in the report")
flags.DEFINE_string("notes", None, "Free text recorded with every run and shown in the report")
flags.DEFINE_string(
    "wandb", None, "Also log every run to this wandb project, one group per study (--set wandb_mode=offline)"
)
flags.DEFINE_string(
    "ray_address", None, "Join an existing Ray cluster at HOST:PORT (default: embedded local Ray)"
)
flags.DEFINE_integer("max_concurrent", 0, "Most runs at once (0: as many as the cluster's CPUs/GPUs allow)")
flags.DEFINE_float("gpus_per_run", None, "GPUs per run (default 1 if the cluster has GPUs, else 0)")
flags.DEFINE_bool(
    "seeds_in_one_program",
    True,
    "Train the seeds of a single-topology condition as one program (--num_seeds); off: one run per seed",
)
flags.DEFINE_bool("report_only", False, "Only rewrite the report from what STUDY_DIR holds")
flags.DEFINE_bool("dry_run", False, "Validate every run's config, list the runs, and exit without running")
flags.DEFINE_string(
    "compilation_cache",
    None,
    "JAX persistent compilation cache shared by the runs (default STUDY_DIR/jax_cache; '' off)",
)


def main(argv) -> int:
    study_dir = _study_dir(argv)
    state = load_state(study_dir)
    if FLAGS.report_only:
        if state is None:
            raise UsageError(f"no {STATE_FILE} in {study_dir}: nothing to report")
        print(f"report: {write_report(study_dir, state)}")
        return 0
    definition, configs = _definition(study_dir, state)
    if FLAGS.wandb:  # every run (and role) of the study in one wandb group
        _join_wandb_group(configs, study_dir)
    if FLAGS.dry_run:
        _print_runs(definition, configs, study_dir)
        return 0
    cache = str(study_dir / "jax_cache") if FLAGS.compilation_cache is None else FLAGS.compilation_cache
    if cache:  # runs of the same shape (every seed of a condition) compile once
        cache = str(Path(cache).absolute())
    state, session, todo = _start_session(study_dir, state, definition, configs)
    interrupted = _run_session(study_dir, state, session, todo, configs, cache)
    return _finish(study_dir, state, configs, interrupted)


def _study_dir(argv) -> Path:
    """The study directory, once the command line names a valid study and the directory is writable."""
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.study:
        raise UsageError(f"--study is required; valid studies: {', '.join(STUDIES)}")
    if FLAGS.study not in STUDIES:
        raise UsageError(f"unknown study {FLAGS.study!r}; valid studies: {', '.join(STUDIES)}")
    study_dir = Path(FLAGS.study_dir or f"runs/studies/{FLAGS.study}-{FLAGS.scale}").absolute()
    check_writable_dir(study_dir, "--study_dir")
    return study_dir


def _definition(study_dir: Path, state: dict | None) -> tuple[dict, dict[str, ConfigDict]]:
    """(the study's definition, run name → config) from the flags, checked against ``state``'s
    definition and validated run by run."""
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
    labels = [f"{k}={v}" for k, v in (("tag", FLAGS.tag), ("notes", FLAGS.notes)) if v is not None]
    definition, configs = build_definition(
        FLAGS.study, FLAGS.scale, envs, parse_seeds(FLAGS.seeds), options, list(FLAGS.set) + labels
    )
    if state is not None and state.get("definition") != definition:
        diff = ", ".join(definition_diff(state.get("definition") or {}, definition))
        raise UsageError(
            f"{study_dir / STATE_FILE} holds a different study definition (differs in: {diff}); "
            "re-run with the same flags, or use another --study_dir"
        )
    validate_runs(configs)
    return definition, configs


def _join_wandb_group(configs: dict[str, ConfigDict], study_dir: Path) -> None:
    """Every run logs to ``--wandb``'s project, in one group per study (unless --set names one)."""
    for c in configs.values():
        c.wandb_project, c.wandb_group = FLAGS.wandb, c.get("wandb_group") or study_dir.name
        if problem := wandb_problem(c):
            raise UsageError(problem)
        c.wandb_mode = wandb_mode(c)  # $WANDB_MODE resolved here: runs may execute elsewhere


def _print_runs(definition: dict, configs: dict[str, ConfigDict], study_dir: Path) -> None:
    """``--dry_run``: one line per run, then where they would be written."""
    for run in definition["runs"]:
        c = configs[run["name"]]
        print(f"{run['name']}: {c.topology}, {c.total_env_steps:,} env steps, {json.dumps(run['overrides'])}")
    print(f"{len(configs)} runs would be written to {study_dir}")


def _start_session(
    study_dir: Path, state: dict | None, definition: dict, configs: dict[str, ConfigDict]
) -> tuple[dict, dict, list[dict]]:
    """(the study's state, this session's record, the runs left to do), the session recorded and saved."""
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
    return state, session, todo


def _run_session(
    study_dir: Path, state: dict, session: dict, todo: list[dict], configs: dict[str, ConfigDict], cache: str
) -> bool:
    """Run what is left on Ray; True when Ctrl-C interrupted it. The state is saved either way."""
    ray = None
    interrupted = False
    try:
        if todo:
            biggest = max(run_needs(configs[r["name"]], 0.0)[0] for r in todo)
            num_cpus = max(os.cpu_count() or 1, int(biggest) * max(1, FLAGS.max_concurrent))
            ray = connect(FLAGS.ray_address, num_cpus)
            _schedule(ray, study_dir, state, session, todo, configs, cache)
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
    return interrupted


def _schedule(
    ray,
    study_dir: Path,
    state: dict,
    session: dict,
    todo: list[dict],
    configs: dict[str, ConfigDict],
    cache: str,
) -> None:
    """Check that the cluster can hold the biggest run and the GPUs per run, then run ``todo``."""
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
        raise UsageError(f"--gpus_per_run {gpus:g} but the Ray cluster has {cluster.get('GPU', 0):g} GPUs")
    for c in configs.values():
        assign_role_gpus(c, gpus)
    limits = {
        "cpus": cluster.get("CPU", 1.0),
        "gpus": cluster.get("GPU", 0.0),
        "gpus_per_run": gpus,
        "max_concurrent": FLAGS.max_concurrent,
        "seeds_in_one_program": FLAGS.seeds_in_one_program,
        "env_vars": {"JAX_COMPILATION_CACHE_DIR": cache} if cache else {},
    }
    schedule(ray, todo, configs, state, study_dir, limits)


def _finish(study_dir: Path, state: dict, configs: dict[str, ConfigDict], interrupted: bool) -> int:
    """Write the report (and publish it to wandb); the exit code: 130 interrupted, 1 a run failed."""
    report = write_report(study_dir, state)
    failed = count_state(state, "failed")
    if FLAGS.wandb:  # the report's plots, as one more wandb run of the study's group
        wandb_keys = ("wandb_project", "wandb_mode", "wandb_entity", "wandb_group")
        first = next(iter(configs.values()))
        config = {**{k: first.get(k) for k in wandb_keys}, "study": FLAGS.study, "scale": FLAGS.scale}
        publish_to_wandb(study_dir, "study", {"runs": len(configs), "failed": failed}, config=config)
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
