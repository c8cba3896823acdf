"""A study's report: results read back from its run directories, tables, plots and ``report.md``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from deepcrl.configs.studies import get_study
from deepcrl.launch.study_runs import is_finished, run_dir_of, topology_of
from deepcrl.rundir.layout import SUMMARY_JSON, learners, read_json
from deepcrl.rundir.metrics import HEADLINE, read_metrics
from deepcrl.rundir.plots import plot_coverage, plot_curves, plot_final, plot_grid
from deepcrl.rundir.stats import T_MIN_SEEDS, group, iqm_interval, sort_key, t_interval

# The headline first: time at goal, the paper's Table 1 figure (steps within the threshold out of the
# episode), then success at any time in the episode. Value: (label, decimals).
METRICS = {
    "eval/time_at_goal": ("time at goal (steps)", 1),
    "eval/time_at_goal_frac": ("time at goal (frac)", 3),
    "eval/success": ("success (any time)", 3),
    "env_steps": ("env steps", 0),
    "wall_time_s": ("wall time (s)", 0),
}
COVERAGE = ("coverage/cells_visited_frac", "coverage/goal_spread")
CURVE_COLUMNS = (
    "env_steps", "updates", "wall_time", "eval/time_at_goal", "eval/time_at_goal_frac", "eval/success",
    "eval/final_distance",
    *COVERAGE,
)  # fmt: skip


def collect(study_dir: Path, definition: dict, state: dict) -> tuple[list[dict], list[dict]]:
    """(one result per finished run and learner, every curve row) read back from the run directories."""
    results, curves = [], []
    for run in definition["runs"]:
        name, rd = run["name"], run_dir_of(study_dir, run["name"])
        topology = topology_of(run)
        if not is_finished(rd, topology):
            continue
        record = state["runs"].get(name, {})
        base = {"run": name, "seed": run["overrides"]["seed"], **run["condition"]}
        found = learners(rd)  # (older single runs have no summary.json: their complete.json has coverage)
        coverage_row = read_json(rd / SUMMARY_JSON).get("collector") or read_json(rd / "complete.json")
        if topology == "single":
            roles = [("agent", int(run["overrides"].get("critic_depth", 0)), found[0].metrics)]
        else:
            roles = [
                ("collector agent" if f.name == "collector_learner" else "train-only", f.depth, f.metrics)
                for f in found
            ]
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
                    **{k: final.get(k) for k in HEADLINE},  # the final evaluation's
                    "env_steps": final.get("env_steps"),
                    "wall_time_s": record.get("wall_time_s"),
                    "program_seeds": record.get("seeds_in_one_program", 1),
                    **{c: coverage_row.get(c) for c in COVERAGE},
                }
            )
            for row in evals:
                curves.append({**base, **extra, **{c: row.get(c) for c in CURVE_COLUMNS}})
    return results, curves


def _fmt(mean: float, half: float | None, digits: int) -> str:
    """``mean ± half`` (the Student-t column)."""
    if not math.isfinite(mean):
        return "—"
    text = f"{mean:.{digits}f}" if digits else f"{mean:,.0f}"
    if half is None:
        return text
    return text + f" ± {half:.{digits}f}" if digits else text + f" ± {half:,.0f}"


def _cell(items: list[dict], metric: str, digits: int, strata: str | None = None) -> str:
    """IQM [95 % stratified bootstrap interval] of ``metric`` over ``items`` (strata: one per value of
    ``strata``, e.g. per env, else one)."""
    values = [[r.get(metric) for r in rs] for rs in group(items, (strata,) if strata else ()).values()]
    return iqm_interval(values, metric).text(digits)


def condition_keys(results: list[dict]) -> tuple[str, ...]:
    skip = {"run", "seed", "program_seeds", *METRICS, *COVERAGE}
    keys: list[str] = []
    for r in results:
        keys += [k for k in r if k not in skip and k not in keys]
    return tuple(keys)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(results: list[dict]) -> str:
    """One row per condition: seeds, then each metric's IQM [95 % CI]; a mean ± Student-t column of the
    headline metrics is added where some condition has ≥ 5 seeds (filled only there)."""
    keys = condition_keys(results)
    conditions = group(results, keys)
    t_columns = ["eval/time_at_goal", "eval/success"] if any(
        len(v) >= T_MIN_SEEDS for v in conditions.values()) else []  # fmt: skip
    rows = []
    for cond, items in conditions.items():
        cells = [str(c) for c in cond] + [str(len(items))]
        for metric, (_, digits) in METRICS.items():
            shared = _wall_cell(items) if metric == "wall_time_s" else None
            cells.append(shared or _cell(items, metric, digits))
        for metric in t_columns:
            digits = METRICS[metric][1]
            enough = len(items) >= T_MIN_SEEDS
            cells.append(_fmt(*t_interval([r[metric] for r in items]), digits) if enough else "—")
        rows.append(cells)
    header = [*keys, "seeds", *(label for label, _ in METRICS.values())]
    header += [f"{METRICS[m][0]}: mean ± t" for m in t_columns]
    return markdown_table(header, rows)


def aggregate_table(results: list[dict]) -> str:
    """Over every env: each condition's IQM [95 % CI] of the fractions (comparable across envs), the
    bootstrap stratified by env. Empty with one env."""
    if len({r.get("env") for r in results}) < 2:
        return ""
    keys = tuple(k for k in condition_keys(results) if k != "env")
    rows = []
    for cond, items in sorted(group(results, keys).items(), key=lambda kv: sort_key(kv[0])):
        envs = len({r.get("env") for r in items})
        cells = [str(c) for c in cond] + [str(envs), str(len(items))]
        cells += [_cell(items, m, 3, strata="env") for m in ("eval/time_at_goal_frac", "eval/success")]
        rows.append(cells)
    return markdown_table([*keys, "envs", "runs", METRICS["eval/time_at_goal_frac"][0],
                           METRICS["eval/success"][0]], rows)  # fmt: skip


def _wall_cell(items: list[dict]) -> str | None:
    """Seeds trained in one program share its wall time (each record holds 1/K of it): report the
    programs' total, not a per-seed mean with a spread of zero. None where each seed ran alone."""
    k = items[0].get("program_seeds", 1)
    if k == 1 or any(r.get("program_seeds", 1) != k or r["wall_time_s"] is None for r in items):
        return None
    total = sum(r["wall_time_s"] for r in items)
    programs = math.ceil(len(items) / k)
    return f"{total:,.0f} for {len(items)} seeds in {programs} program{'s' if programs > 1 else ''}"


def coverage_table(results: list[dict], by: str) -> str:
    per_run = {r["run"]: r for r in results}.values()  # coverage belongs to the run's collector
    rows = []
    for (env, value), items in sorted(
        group(list(per_run), ("env", by)).items(), key=lambda kv: sort_key(kv[0])
    ):
        cells = [env, str(value), str(len(items))]
        cells += [_cell(items, c, 3) for c in COVERAGE]
        rows.append(cells)
    label = "collector depth" if by == "collector_depth" else by
    return markdown_table(["env", label, "seeds", "cells visited (frac)", "goal spread"], rows)


def decoupling_grid(results: list[dict]) -> str:
    """The paper's 2×2 per env: rows collector depth, columns train-only learner depth.

    Two tables per env: time at goal (the headline), then success at any time.
    """
    parts = []
    trained = [r for r in results if r.get("learner") == "train-only"]
    for env in dict.fromkeys(r["env"] for r in trained):
        rs = [r for r in trained if r["env"] == env]
        collectors = sorted({r["collector_depth"] for r in rs}, reverse=True)
        learners = sorted({r["learner_depth"] for r in rs}, reverse=True)
        cells = group(rs, ("collector_depth", "learner_depth"))
        for metric in ("eval/time_at_goal", "eval/success"):
            label, digits = METRICS[metric]
            rows = [
                [f"collector d{c}"] + [_cell(cells.get((c, ld), []), metric, digits) for ld in learners]
                for c in collectors
            ]
            parts.append(f"**{env}**: final {label} of the train-only learners\n\n")
            parts.append(markdown_table(["", *(f"learner d{ld}" for ld in learners)], rows) + "\n\n")
    return "".join(parts)


STATISTICS_NOTE = (
    "Each cell: the interquartile mean (IQM) over seeds [its 95 % percentile-bootstrap confidence interval, "
    "clipped to the metric's range]; the seeds column is the number of runs behind it, and one seed shows "
    "its value alone (Agarwal et al., NeurIPS 2021; scipy's `trim_mean` and `bootstrap`). Where a condition "
    f"has at least {T_MIN_SEEDS} seeds, a last column gives the mean ± the half-width of the 95 % Student-t "
    "interval."
)


def write_curves_csv(curves: list[dict], out: Path) -> Path:
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
    write_curves_csv(curves, study_dir / "curves.csv")
    figures = plot_figures(study_dir, definition, module, results, curves) if results else []
    runs, sessions = state["runs"], state.get("sessions", [])
    lines = _summary_lines(definition, module, runs, sessions)
    lines += _hardware_lines(runs, sessions)
    lines += _results_lines(definition, module, results)
    lines += _closing_lines(runs, figures)
    out = study_dir / "report.md"
    out.write_text("\n".join(lines))
    return out


def plot_figures(
    study_dir: Path, definition: dict, module, results: list[dict], curves: list[dict]
) -> list[Path]:
    """The study's plots (the headline first), written to ``study_dir``; their paths."""
    envs, name = definition["envs"], definition["study"]
    figures = []
    has_tag = any(r.get("eval/time_at_goal_frac") is not None for r in results)
    if has_tag:  # the headline first
        figures.append(plot_curves(curves, envs, module.CURVE_KEYS, study_dir / "time_at_goal_curves.png",
                                   f"{name}: time at goal vs env steps", metric="eval/time_at_goal"))  # fmt: skip
    figures.append(plot_curves(curves, envs, module.CURVE_KEYS, study_dir / "success_curves.png",
                               f"{name}: success vs env steps"))  # fmt: skip
    metrics = (["eval/time_at_goal_frac"] if has_tag else []) + ["eval/success"]
    for metric in metrics:
        stem = "time_at_goal" if metric == "eval/time_at_goal_frac" else "success"  # the files' names
        if module.FINAL_X:
            figures.append(plot_final(results, envs, module.FINAL_X, module.FINAL_LINES,
                                      study_dir / f"final_{stem}.png",
                                      f"{name}: final {METRICS[metric][0]}", metric=metric))  # fmt: skip
        else:
            grid = "decoupling_grid.png" if metric == "eval/success" else f"decoupling_grid_{stem}.png"
            figures.append(plot_grid(results, envs, study_dir / grid, metric=metric))
    if module.COVERAGE_BY:
        figures.append(plot_coverage(results, envs, module.COVERAGE_BY, study_dir / "coverage.png"))
    return figures


def _summary_lines(definition: dict, module, runs: dict, sessions: list[dict]) -> list[str]:
    """The report's title, the study's description and definition, run counts and wall times."""
    counts = {
        s: sum(1 for r in runs.values() if r["state"] == s) for s in ("done", "running", "pending", "failed")
    }
    total_wall = sum(s.get("wall_time_s", 0.0) for s in sessions)
    run_time = sum(r.get("wall_time_s", 0.0) or 0.0 for r in runs.values() if r["state"] == "done")
    labels = {k: v for k, _, v in (item.partition("=") for item in definition["set"]) if k in ("tag", "notes")}
    return [
        f"# Study `{definition['study']}` (scale {definition['scale']})",
        "",
        *(f"- {k}: {v}" for k, v in labels.items()),
        *([""] if labels else []),
        module.DESCRIPTION,
        "",
        f"- envs: {', '.join(definition['envs'])}; seeds: {', '.join(map(str, definition['seeds']))}",
        f"- options: {json.dumps(definition['options'])}; --set: {' '.join(definition['set']) or 'none'}",
        f"- runs: {len(runs)} — " + ", ".join(f"{v} {k}" for k, v in counts.items() if v),
        f"- total wall time: {_hms(total_wall)} over {len(sessions)} session(s) of the study command; "
        f"the finished runs took {_hms(run_time)} summed (each from task start, compile included)",
        "",
    ]


def _hardware_lines(runs: dict, sessions: list[dict]) -> list[str]:
    """The Hardware section: each session's driver and Ray cluster, and the hosts the runs ran on."""
    lines = ["## Hardware", ""]
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
    return lines


def _results_lines(definition: dict, module, results: list[dict]) -> list[str]:
    """The Results section: the table over seeds, the decoupling grid and the coverage table."""
    lines = [
        "",
        "## Results",
        "",
        STATISTICS_NOTE,
        "",
        "Time at goal (the paper's headline, its Table 1 figure) counts the steps within the success threshold "
        "over the whole evaluation episode, nothing after an early termination; success counts reaching the "
        "goal at any time. Both are the last deterministic evaluation; env steps are those the learner had "
        "seen at that evaluation.",
        "",
        results_table(results) if results else "_no run has finished yet_",
        "",
    ]
    if aggregate := aggregate_table(results):
        lines += ["### Over all envs", "", "IQM over every run of every env, the bootstrap stratified by env.",
                  "", aggregate, ""]  # fmt: skip
    if definition["study"] == "decoupling" and results:
        lines += ["### Collector × learner grid", "", decoupling_grid(results)]
    if module.COVERAGE_BY and results:
        lines += [
            "## Exploration coverage",
            "",
            "Fraction of the free cells of a fixed x-y grid that the collector's states visited, and the spread "
            "(std) of the visited goal coordinates, at the end of each run (IQM [95 % bootstrap CI] over seeds).",
            "",
            coverage_table(results, module.COVERAGE_BY),
            "",
        ]
    return lines


def _closing_lines(runs: dict, figures: list[Path]) -> list[str]:
    """The failed runs, the figures and a pointer to ``curves.csv``."""
    lines = []
    failed = {n: r for n, r in runs.items() if r["state"] == "failed"}
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{n}`: {r.get('error')}" for n, r in failed.items()] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    lines += ["All curves (one row per evaluation, every run and learner): `curves.csv`.", ""]
    return lines
