"""Entry point: ``python launch/run.py --topology single --env point_mass ...``.

Flags override the config (defaults, or a preset given with ``--config
PATH[:NAME]``); ``--set key=value`` reaches any other config field. Bad input
ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import jax
from absl import flags
from ml_collections import ConfigDict

from deepcrl import envs
from deepcrl.buffer import replay_backend
from deepcrl.configs import budget, disk
from deepcrl.configs.budget import fmt
from deepcrl.configs.defaults import TOPOLOGIES
from deepcrl.configs.defaults import get_config as default_config
from deepcrl.configs.experiment import resolve
from deepcrl.configs.topologies import DESCRIPTIONS, unused_field
from deepcrl.configs.validation import ConfigError, apply_override
from deepcrl.launch import attach
from deepcrl.launch.cli import STOP, Interrupted, RoleFailed, UsageError, check_writable_dir, run_main
from deepcrl.launch.dispatch import run_experiment
from deepcrl.launch.plan import plan
from deepcrl.rundir import provenance
from deepcrl.rundir.checkpoints import CheckpointError
from deepcrl.rundir.diskspace import DiskFull, describe_full_disk, full_disk_path
from deepcrl.rundir.lock import LOCK_NAME, RunDirBusy, live_driver
from deepcrl.rundir.metrics import WANDB_MODES, default_run_dir, wandb_mode, wandb_problem

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file PATH[:NAME]; the presets: configs/presets.py:paper, :cpu or :default")
flags.DEFINE_string("topology", None, f"One of: {', '.join(TOPOLOGIES)} (default single; see --list_topologies)")
flags.DEFINE_string("env", None, f"One of: {', '.join(envs.env_names())} (default point_mass; see --list_envs)")
flags.DEFINE_string("backend", None, "Physics backend: spring, positional, generalized or mjx (Brax envs; the arm envs: mjx only; default: the env's, see --list_envs)")
flags.DEFINE_string(
    "eval_env", None, "Evaluate on this env of the same family, e.g. ant_big_maze_eval (default: --env)"
)
flags.DEFINE_string("run_dir", None, "Run directory (default runs/<env>-<topology>-<time>)")
flags.DEFINE_string("tag", None, "A short label of the run (config.json, summary, study reports, TensorBoard hparams)")
flags.DEFINE_string("notes", None, "Free text recorded with the run: why it was made")
for _name, _help in [
    ("total_env_steps", "Env steps to collect in total"),
    ("num_envs", "Parallel training envs"),
    ("num_eval_envs", "Parallel evaluation envs"),
    ("batch_size", "SGD batch size"),
    ("num_minibatches", "SGD steps per collection step"),
    ("critic_depth", "Residual depth of φ and ψ (multiple of 4)"),
    ("actor_depth", "Residual depth of the actor (multiple of 4)"),
    ("critic_width", "Width of φ and ψ"),
    ("actor_width", "Width of the actor"),
    ("episode_length", "Episode length (0: env default)"),
    ("num_evals", "Evaluations (epochs) over the run"),
    ("seed", "Random seed"),
    ("num_seeds", "Seeds seed, seed+1, … trained in one program (topology single)"),
]:
    flags.DEFINE_integer(_name, None, _help)
flags.DEFINE_string(
    "ray_address", None, "Join an existing Ray cluster at HOST:PORT (default: embedded local Ray)"
)
flags.DEFINE_string("devices", None, "Local devices a single run spreads over: N or all (envs, replay and "
                    "batch split N ways; K seeds K/N per device). Default 1")
flags.DEFINE_string("replay", None, "Replay backend of a distributed run: reverb | ray (default: reverb where "
                    "installed, else ray)")
flags.DEFINE_integer("collector_depth", None, "Depth of the collector agent (distributed topologies)")
flags.DEFINE_integer("collector_width", None, "Width of the collector agent (distributed topologies)")
flags.DEFINE_string("learner_depths", None, "Depths of the train-only learners, e.g. 32,4")
flags.DEFINE_string("learner_widths", None, "Widths of the train-only learners: one, or one per learner")
flags.DEFINE_float("gpus_per_collector", None, "GPUs for the collector (fractions share a GPU)")
flags.DEFINE_float("gpus_per_learner", None, "GPUs per learner (fractions share a GPU)")
flags.DEFINE_float("cpus_per_role", None, "Ray CPUs per role of a distributed topology (default 1)")
flags.DEFINE_multi_string("set", [], "Override any config field: --set gamma=0.98")
flags.DEFINE_string("wandb", None, "Also log to this wandb project (--set wandb_mode=offline: no network)")
flags.DEFINE_bool("list_envs", False, "List environments and exit")
flags.DEFINE_bool("list_topologies", False, "List topologies, what each runs, and exit")
flags.DEFINE_bool(
    "dry_run", False, "Validate the config, print the memory estimate and its limit, exit; write nothing"
)
flags.DEFINE_bool("progress", True, "Show a progress bar")
flags.DEFINE_string(
    "from_run", None, "learners_from_replay: the finished distributed run whose replay checkpoint the learners train on"
)
flags.DEFINE_string("attach", None, "Add learners (--learner_depths 64,16) to the live distributed run in RUN")
flags.DEFINE_string("detach", None, "Stop one learner (--role NAME) of the live distributed run in RUN")
flags.DEFINE_string("role", None, "With --detach: the learner to stop; with --attach: a name for the one learner")
flags.DEFINE_float("attach_timeout_s", 900.0, "How long --attach/--detach wait for the driver's answer")
flags.DEFINE_bool(
    "overwrite", False, "Start a new run in a --run_dir that holds one: the old run is moved aside, not deleted"
)
flags.DEFINE_bool(
    "resume",
    False,
    "Continue the run in --run_dir from its latest checkpoints (its saved config.json is the base config)",
)

FLAG_FIELDS = (
    "topology", "env", "eval_env", "backend", "run_dir", "total_env_steps", "num_envs", "num_eval_envs", "batch_size",
    "num_minibatches", "critic_depth", "actor_depth", "critic_width", "actor_width", "episode_length",
    "num_evals", "seed", "num_seeds", "ray_address", "collector_depth", "collector_width", "learner_depths",
    "learner_widths", "gpus_per_collector", "gpus_per_learner", "cpus_per_role", "tag", "notes",
)  # fmt: skip


def load_config_file(spec: str) -> ConfigDict:
    """``PATH[:NAME]`` → the file's ``get_config(NAME)`` (or ``get_config()``)."""
    path, _, name = spec.partition(":")
    if not Path(path).is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        config = module.get_config(name) if name else module.get_config()
    except Exception as e:  # a user's file can fail in any way; report it in one line
        raise UsageError(f"could not load config {spec}: {type(e).__name__}: {e}") from None
    if not isinstance(config, ConfigDict):
        raise UsageError(f"config {spec} did not return an ml_collections ConfigDict")
    return config


def saved_config(run_dir: str | None, flag: str = "--resume") -> ConfigDict:
    """The config a run directory was started with (for ``--resume``, or the run ``--from_run``
    names), over today's defaults.

    ``UsageError`` when there is no such run: no ``--run_dir``, a directory that does not exist or
    holds no ``config.json``, or a ``config.json`` that does not parse.
    """
    if not run_dir:
        raise UsageError("--resume needs --run_dir: the run directory to continue")
    if not Path(run_dir).is_dir():
        what = "is a file, not a run directory" if Path(run_dir).exists() else "does not exist"
        raise UsageError(f"{flag}: run directory {run_dir} {what}")
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        hint = "start a new run without --resume" if flag == "--resume" else "give a finished run's directory"
        raise UsageError(f"{flag}: {run_dir} holds no run (no config.json); {hint}")
    config = default_config()
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise ValueError(f"a JSON {type(saved).__name__}, not an object")
        for key, value in saved.items():
            old = config.get(key)
            use = isinstance(old, (int, float, str)) and value is not None
            config[key] = type(old)(value) if use else value
        if saved.get("topology", "single") != "single" and "replay_backend" not in saved:
            config.replay_backend = "reverb"  # runs from before the choice: their checkpoints are Reverb's
    except (OSError, ValueError, TypeError) as e:
        reason = " ".join(str(e).split())[:120]
        raise UsageError(f"{flag}: {path} does not parse ({reason}); that run cannot be used") from None
    return config


def from_run_config(run_dir: str) -> ConfigDict:
    """The base config of a ``learners_from_replay`` run: the settings of the run in ``run_dir`` (env,
    sizes, segment length: what its data was collected with), and the replay tables it left."""
    source = saved_config(run_dir, "--from_run")
    if source.topology == "single":
        raise UsageError(f"--from_run: {run_dir} is a single run (no replay service); give a distributed run")
    wrote = source.get("replay_backend") or "reverb"
    if FLAGS.replay and FLAGS.replay != wrote:
        raise UsageError(f"--from_run: the replay checkpoint of {run_dir} was written by the {wrote} backend, "
                         f"which alone reads it; use --replay {wrote} (or leave --replay out)")  # fmt: skip
    problem = replay_backend.problem(wrote)
    if problem:
        raise UsageError(f"--from_run: {run_dir}'s replay checkpoint needs its backend: {problem}")
    if not replay_backend.load(wrote).restorable(str(Path(run_dir) / "replay")):
        raise UsageError(f"--from_run: {run_dir} left no {wrote.capitalize()} checkpoint in {Path(run_dir) / 'replay'}")
    try:
        tables = resolve(source)
    except ConfigError as e:
        raise UsageError(f"--from_run: the config of {run_dir} no longer resolves ({e})") from None
    config = source.copy_and_resolve_references()
    config.update(topology="learners_from_replay", from_run=str(Path(run_dir).absolute()), learner_depths="",
                  learner_widths="", from_tables=",".join(tables.replay.table_names),
                  from_table=tables.learners[0].table_name, run_dir="")  # fmt: skip
    return config


def finished_note(run_dir: str, saved: ConfigDict) -> str | None:
    """A line saying the run in ``run_dir`` already finished, or None: ``complete.json`` (single,
    K seeds), or ``summary.json`` with the collector at ``total_env_steps`` (distributed; a run
    stopped with Ctrl-C writes a summary too, short of the total, and is resumable)."""
    complete, summary = Path(run_dir) / "complete.json", Path(run_dir) / "summary.json"
    if complete.is_file():
        try:
            row = json.loads(complete.read_text())
            detail = f": epoch {row['epoch']}, {row['env_steps']:,} env steps"
        except (OSError, ValueError, KeyError, TypeError):
            detail = ""
        return f"run {run_dir} already finished (complete.json{detail}); nothing to resume"
    if summary.is_file():
        try:
            steps = int((json.loads(summary.read_text()).get("collector") or {}).get("env_steps", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        total = int(saved.total_env_steps)
        if steps >= total:
            return (
                f"run {run_dir} already finished (summary.json: the collector made {steps:,} of "
                f"{total:,} env steps); nothing to resume"
            )
    return None


# Fields that fix the shapes of what a run saved (parameters, optimizer state, per-seed dirs, roles):
# a resumed run must keep them, or its checkpoints no longer fit.
RESUME_FIXED = (
    "env", "topology", "num_seeds", "num_envs", "critic_depth", "critic_width", "actor_depth",
    "actor_width", "max_actor_depth", "repr_dim", "scan_blocks", "deep_depth", "shallow_depth",
    "collector_depth", "collector_width", "learner_depths", "learner_widths", "spare_tables", "attach_warm_start",
    "replay_backend",
)  # fmt: skip


def check_resume_fields(saved: ConfigDict | None, config: ConfigDict) -> None:
    """One line naming the first field a ``--resume`` would change that its checkpoints depend on."""
    if saved is None:
        return
    for name in RESUME_FIXED:
        if name in saved and saved.get(name) != config.get(name):
            raise UsageError(
                f"--resume cannot change {name} (the run was started with {saved.get(name)!r}, "
                f"asked {config.get(name)!r}); resume without it, or start a new --run_dir"
            )


def build_config() -> ConfigDict:
    saved = saved_config(FLAGS.run_dir) if FLAGS.resume else None
    if FLAGS.config:
        config = load_config_file(FLAGS.config)
    elif FLAGS.from_run and saved is None:
        config = from_run_config(FLAGS.from_run)
    elif saved is not None:
        config = saved.copy_and_resolve_references()  # flags override the copy; `saved` stays for the check
    else:
        config = default_config()
    for name in FLAG_FIELDS:
        value = getattr(FLAGS, name)
        if value is not None:
            config[name] = value
    if FLAGS.devices is not None:
        if FLAGS.devices.strip().lower() != "all" and not FLAGS.devices.strip().isdigit():
            raise UsageError(f"--devices must be a number of devices or all, got {FLAGS.devices!r}")
        config.num_devices = 0 if FLAGS.devices.strip().lower() == "all" else int(FLAGS.devices)
    if FLAGS.replay:
        if config.topology == "single":
            raise UsageError("--replay is not used by topology single (its replay lives on the device, in its program)")
        config.replay_backend = FLAGS.replay
        problem = replay_backend.problem(FLAGS.replay)
        if problem:
            raise UsageError(problem)
    if config.topology != "single" and not config.get("replay_backend"):
        config.replay_backend = replay_backend.default()  # recorded in config.json: a resume keeps it
    if FLAGS.wandb:
        config.wandb_project = FLAGS.wandb
    for item in FLAGS.set:
        try:
            apply_override(config, item)
        except ConfigError as e:
            raise UsageError(str(e)) from None
    given = [n for n in FLAG_FIELDS if getattr(FLAGS, n) is not None] + [i.partition("=")[0] for i in FLAGS.set]
    given += ["num_devices"] if FLAGS.devices is not None else []
    unused = unused_field(str(config.topology), given)
    if unused:
        raise UsageError(unused)
    if config.get("wandb_mode") and config.wandb_mode not in WANDB_MODES:
        raise UsageError(f"wandb_mode must be one of {', '.join(WANDB_MODES)}, got {config.wandb_mode!r}")
    problem = wandb_problem(config)
    if problem:
        raise UsageError(problem)
    if config.get("wandb_project"):
        config.wandb_mode = wandb_mode(config)  # $WANDB_MODE resolved here: roles may run elsewhere
    check_resume_fields(saved, config)
    if FLAGS.from_run and config.topology != "learners_from_replay":
        raise UsageError(f"--from_run goes with --topology learners_from_replay, not {config.topology}")
    return config


def check_from_run(experiment) -> None:
    """The new learners' items must be shaped as the data the run in ``from_run`` left."""
    source = resolve(saved_config(experiment.config.from_run, "--from_run")).replay
    if source.item_shapes() != experiment.replay.item_shapes():
        raise UsageError(
            f"--from_run: its data holds segments shaped {source.item_shapes()}, these settings make "
            f"{experiment.replay.item_shapes()}; leave the env, episode and segment sizes as that run had them"
        )


def what_is_there(run_dir: Path) -> str | None:
    """What ``run_dir`` holds, in a few words (None: nothing, or the directory does not exist)."""
    try:
        entries = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not entries:
        return None
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        state = "finished" if {"complete.json", "summary.json"} & set(entries) else "unfinished"
        return f"a {state} {saved.get('topology', '?')} run on {saved.get('env', '?')}"
    except (OSError, ValueError, AttributeError):
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        return f"{len(entries)} entries ({shown})"


def set_aside_path(run_dir: Path) -> Path:
    """Where ``--overwrite`` moves an old run: beside it, named by the time (never an existing path)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    return aside


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool, dry_run: bool) -> None:
    """A live driver on ``run_dir`` refuses everything; a new run never writes over an old one:
    ``--resume`` continues it, ``--overwrite`` moves it aside first (one line says where)."""
    busy = live_driver(run_dir)
    if busy:
        raise UsageError(busy)
    if resume:
        return
    there = what_is_there(run_dir)
    if there is None:
        return
    aside = set_aside_path(run_dir)
    if not overwrite:
        go_on = "" if there.startswith("a finished") else "continue it with --resume, "
        raise UsageError(
            f"--run_dir {run_dir} already holds {there}; {go_on}start over with --overwrite (it is moved "
            f"aside to {aside.name}), or give another --run_dir"
        )
    if dry_run:
        print(f"--overwrite would move {there} in {run_dir} aside to {aside}")
        return
    try:
        run_dir.rename(aside)
    except OSError as e:
        raise UsageError(f"--overwrite could not move {run_dir} aside to {aside}: {e.strerror or e}") from None
    print(f"note: moved {there} from {run_dir} aside to {aside}", file=sys.stderr)


def list_envs() -> None:
    describe = getattr(envs, "describe_envs", None)
    if describe is None:
        for name in envs.env_names():
            print(name)
        return
    rows = describe()
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


def main(argv) -> int:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.list_envs:
        list_envs()
        return 0
    if FLAGS.list_topologies:
        width = max(map(len, TOPOLOGIES))
        print("\n".join(f"{name.ljust(width)}  {DESCRIPTIONS[name]}" for name in TOPOLOGIES))
        return 0
    if FLAGS.attach or FLAGS.detach:
        print(elastic_command())
        return 0
    if FLAGS.resume and FLAGS.overwrite:
        raise UsageError("give --resume (continue the run) or --overwrite (start over), not both")
    if FLAGS.resume:  # checked before anything else: a resume of no run, or of a finished one, writes nothing
        note = finished_note(FLAGS.run_dir, saved_config(FLAGS.run_dir))  # a live run is refused below
        if note:
            print(note)
            return 0
    config = build_config()
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config.env, config.topology)
    config.run_dir = str(run_dir)
    try:
        experiment = resolve(config)
        memory = budget.check(experiment)  # sizes and counts, before anything is allocated
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if experiment.topology == "learners_from_replay":
        check_from_run(experiment)
    check_writable_dir(run_dir, "--run_dir")
    check_run_dir(run_dir, FLAGS.resume, FLAGS.overwrite, FLAGS.dry_run)
    try:
        space = disk.check(experiment, run_dir, resume=FLAGS.resume)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    print(plan(experiment), flush=True)
    print(f"  disk: writes up to ~{fmt(space['need'])}; {fmt(space['free'])} free at {space['where']}", flush=True)
    prov = provenance.collect(jax.local_devices()[:1])
    print(provenance.summary(prov), flush=True)
    if prov["cpu_while_gpu_visible"]:
        print("note: this run uses the CPU although an NVIDIA GPU is visible (a CPU-only jaxlib? ./setup.sh --gpu)",
              flush=True)  # fmt: skip
    if FLAGS.dry_run:
        print(budget.table(memory))
        print("dry run: nothing started, nothing written")
        return 0
    experiment = experiment.with_memory(memory)  # recomputed on every start (--resume too); config.json keeps it
    hint = f"continue with: {resume_command(run_dir)}"
    STOP.resume_hint = hint
    try:
        STOP.check()  # a Ctrl-C during the checks above
        row = run_experiment(experiment, run_dir, resume=FLAGS.resume, progress=FLAGS.progress)
    except (CheckpointError, ConfigError, RunDirBusy) as e:  # raised before anything is written
        raise UsageError(str(e)) from None
    except RoleFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print(f"interrupted: the run in {run_dir} stopped with its checkpoints; {hint}", file=sys.stderr)
        return 130
    except DiskFull as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a full disk met by `single` itself (the distributed driver raises DiskFull)
        full = full_disk_path(e)
        if full is None:
            raise
        print(f"error: {describe_full_disk(full, run_dir)}", file=sys.stderr)
        return 2
    print(f"run directory: {run_dir}")
    if row:
        print(final_line(row))
    return 0


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in ``run_dir`` (as this one was started)."""
    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else Path(sys.executable).name
    return f"{python} {sys.argv[0]} --resume --run_dir {run_dir}"


def elastic_command() -> str:
    """``--attach RUN`` / ``--detach RUN``: ask the live run's driver, print its answer."""
    if FLAGS.attach and FLAGS.detach:
        raise UsageError("give --attach RUN or --detach RUN, not both")
    warm = None
    for item in FLAGS.set:
        key, _, value = item.partition("=")
        if key.strip() != "attach_warm_start":
            raise UsageError(f"--attach/--detach take no --set {key.strip()} (only attach_warm_start=true|false)")
        warm = value.strip().lower() in ("1", "true", "yes")
    if FLAGS.detach:
        return attach.detach(FLAGS.detach, FLAGS.role or "", FLAGS.attach_timeout_s)
    return attach.attach(FLAGS.attach, FLAGS.learner_depths or "", FLAGS.learner_widths or "",
                         FLAGS.gpus_per_learner, FLAGS.role or "", FLAGS.attach_timeout_s, warm)  # fmt: skip


def final_line(row: dict) -> str:
    """The run's result in one line: the final evaluation (of the driving learner, when distributed)."""
    nan = float("nan")
    tag, frac = row.get("eval/time_at_goal", nan), row.get("eval/time_at_goal_frac", nan)
    note = row.get("who", "the collector's learner")
    who = f" of {row['learner']} (depth {row['depth']}, {note})" if row.get("learner") else ""
    return (
        f"final eval{who}: time at goal {tag:.1f} steps ({frac:.3f} of the episode), "
        f"success {row.get('eval/success', nan):.3f}"
    )


if __name__ == "__main__":
    run_main(main)
