"""Compare runs in one picture: every learner of every run or study given, grouped by a config field.

    python -m deepcrl.launch.compare runs/a runs/b runs/studies/depth_sweep-cpu --by critic_depth
    python -m deepcrl.launch.compare runs/a runs/b --out compare.png

One figure (rows: time at goal, success; one column per env) of the deterministic evaluations against
env steps, a line per value of ``--by`` (default: one per run and learner), aggregated over the runs
and seeds that share it: their IQM, with a 95 % bootstrap band (rundir/stats.py). Beside the figure,
``<out>.md`` holds the table of final values, also printed: IQM [95 % CI] and the number of runs.
Any topology's run directory works, older ones too (rundir/layout.py); a study directory stands for
all its runs. Bad input (no such directory, not a run, an unknown field, nothing evaluated yet) is one
``error:`` line, exit 2.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from absl import flags

from deepcrl.launch.cli import UsageError, run_main
from deepcrl.rundir.layout import NETWORK_FIELDS, learners, read_json
from deepcrl.rundir.metrics import read_metrics
from deepcrl.rundir.plots import plot_compare
from deepcrl.rundir.stats import group, iqm_interval, sort_key

FLAGS = flags.FLAGS
flags.DEFINE_string("by", None, "Group learners by this config field (e.g. critic_depth, batch_size, env)")
flags.DEFINE_string("out", "compare.png", "The figure; the table goes beside it as <out>.md")

METRICS = (("eval/time_at_goal", "time at goal (steps)", 1), ("eval/success", "success (any time)", 3))


def run_dirs(paths: list[str]) -> list[Path]:
    """Every run directory named: a run directory itself, or each run of a study directory."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if not path.is_dir():
            raise UsageError(f"{path} is not a directory (give run or study directories)")
        if (path / "config.json").is_file():
            if not read_json(path / "config.json"):
                raise UsageError(f"{path / 'config.json'} does not parse: {path} is not a run this command can read")
            found.append(path)
        elif (path / "study.json").is_file():
            found += sorted(p.parent for p in (path / "runs").glob("*/config.json"))
        else:
            raise UsageError(f"{path} is neither a run directory (config.json) nor a study directory (study.json)")
    return found


def learner_curves(run_dir: Path, by: str | None) -> list[dict]:
    """One row per evaluation of every learner of the run: env, env steps, metrics and the group value."""
    config = read_json(run_dir / "config.json")
    rows, found = [], learners(run_dir)
    several = len(found) > 1
    for files in found:
        settings = {**config, **{k: files.final[k] for k in NETWORK_FIELDS if k in files.final}}
        if files.depth is not None:
            settings["critic_depth"] = files.depth
        if by is None:
            value = run_dir.name + (f" {files.name}" if several and files.name != "single" else "")
        else:
            value = settings.get(by)
        for row in read_metrics(files.metrics):
            if "eval/success" in row:
                rows.append({"env": config.get("env"), "group": value, "run": str(run_dir), "learner": files.name,
                             "seed": files.seed, "env_steps": row.get("env_steps"),
                             **{m: row.get(m) for m, _, _ in METRICS}})  # fmt: skip
    return rows


def check_field(by: str, configs: list[dict]) -> None:
    known = sorted({k for c in configs for k in c} | set(NETWORK_FIELDS))
    if by not in known:
        close = difflib.get_close_matches(by, known, n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UsageError(f"--by {by}: no such config field in these runs; {hint}valid: {', '.join(known)}")


def final_table(curves: list[dict], by: str) -> str:
    """Per env and group: the runs behind it, and each metric's final value as IQM [95 % CI]."""
    lines = [f"| env | {by} | runs | env steps | " + " | ".join(label for _, label, _ in METRICS) + " |"]
    lines.append("|" + "---|" * (4 + len(METRICS)))
    for (env, value), rows in sorted(group(curves, ("env", "group")).items(), key=lambda kv: sort_key(kv[0])):
        finals = [max(rs, key=lambda r: r["env_steps"] or 0) for rs in group(rows, ("run", "learner", "seed")).values()]
        steps = iqm_interval([[f["env_steps"] for f in finals]]).text(0)
        cells = [iqm_interval([[f[m] for f in finals]], m).text(digits) for m, _, digits in METRICS]
        lines.append(f"| {env} | {value} | {len(finals)} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv) -> int:
    out = Path(FLAGS.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: give a .png file")
    dirs = run_dirs(argv[1:])
    if not dirs:
        raise UsageError("give one or more run or study directories (a study with no run yet has none)")
    if FLAGS.by:
        check_field(FLAGS.by, [read_json(d / "config.json") for d in dirs])
    curves = [row for d in dirs for row in learner_curves(d, FLAGS.by)]
    if not curves:
        raise UsageError(f"none of the {len(dirs)} run(s) has an evaluation yet (one is written each epoch)")
    out.parent.mkdir(parents=True, exist_ok=True)
    label = FLAGS.by or "run"
    table = final_table(curves, label)
    envs = list(dict.fromkeys(r["env"] for r in curves))
    title = f"{len(dirs)} run(s)" + (f" by {FLAGS.by}" if FLAGS.by else "")
    plot_compare(curves, envs, label, [m for m, _, _ in METRICS], out, title)
    out.with_suffix(".md").write_text(f"# {title}\n\nFinal evaluation, IQM [95 % bootstrap CI] over the runs.\n\n"
                                      f"{table}\n\n![{out.stem}]({out.name})\n")  # fmt: skip
    print(table)
    print(f"figure: {out}; table: {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    run_main(main)
