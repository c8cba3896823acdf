"""Plots of metric rows, shared by run directories, studies and benchmarks."""

from __future__ import annotations

import math
from pathlib import Path

from deepcrl.rundir.stats import Interval, group, iqm_interval, sort_key

DPI = 150
PANEL_IN = (5.0, 4.0)  # inches per plot panel: 750 × 600 px


def plot_success(curves: dict[str, list[dict]], out: Path, title: str = "") -> Path:
    """Deterministic-eval curves vs env steps, one line per role/learner.

    Left: time at goal (steps within the threshold out of the episode, the
    paper's headline metric), when the rows have it; right: success at any time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("eval/success", "success rate (eval)", (-0.02, 1.02))]
    if any("eval/time_at_goal" in r for rows in curves.values() for r in rows):
        panels.insert(0, ("eval/time_at_goal", "time at goal (steps, eval)", None))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), dpi=DPI, squeeze=False)
    for ax, (key, ylabel, ylim) in zip(axes[0], panels, strict=True):
        for label, rows in curves.items():
            rows = [r for r in rows if key in r]
            if rows:
                ax.plot([r["env_steps"] for r in rows], [r[key] for r in rows], marker="o", label=label)
        ax.set_xlabel("env steps")
        ax.set_ylabel(ylabel)
        if ylim:
            ax.set_ylim(*ylim)
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_title(title)
        if len(curves) > 1:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


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


def _finish(plt, fig, out: Path, title: str) -> Path:
    """Title, layout, save at DPI and close: the common end of every study figure."""
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


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


def _yerr(stats: list[Interval]) -> list[list[float]]:
    """matplotlib's asymmetric error bars ([below], [above]) of bootstrap intervals."""
    return [[s.errors()[0] for s in stats], [s.errors()[1] for s in stats]]


def _seeds(stats: list[Interval]) -> str:
    """`` (n=3)`` or `` (n=2–3)``: how many runs each point of a line aggregates."""
    ns = sorted({s.n for s in stats if s.n})
    if not ns:
        return ""
    return f" (n={ns[0]})" if len(ns) == 1 else f" (n={ns[0]}–{ns[-1]})"


def _log2_axis(ax, values: list) -> None:
    """Log-2 x axis labelled with the study's own values (4, 8, 16 … or 1.2M parameters)."""
    values = sorted({v for v in values if v})
    ax.set_xscale("log", base=2)
    if values:
        ax.set_xticks(values, [f"{v / 1e6:.2g}M" if v >= 1e5 else f"{v:g}" for v in values], fontsize=7)
        ax.minorticks_off()


def plot_curves(
    curves: list[dict],
    envs: list[str],
    keys: tuple[str, ...],
    out: Path,
    title: str,
    metric: str = "eval/success",
) -> Path:
    """``metric`` vs env steps: one panel per env, one line per condition (the IQM over seeds, its 95 %
    bootstrap interval as a band).

    ``metric="eval/time_at_goal"`` plots the paper's headline metric (steps at the goal per episode).
    """
    plt, fig, axes = _figure(envs)
    for ax, env in zip(axes, envs, strict=False):
        rows = [c for c in curves if c["env"] == env and c.get("learner") != "collector"]
        draw_curves(ax, rows, keys, metric)
        ax.set_title(env, fontsize=9)
    return _finish(plt, fig, out, title)


def draw_curves(ax, rows: list[dict], keys: tuple[str, ...], metric: str) -> None:
    """On ``ax``: one line per value of ``keys`` (its IQM over the runs ``(run, learner, seed)`` at each env step
    and the 95 % bootstrap band, within the metric's range), labelled with the number of runs."""
    import numpy as np

    for cond, items in sorted(group(rows, keys).items(), key=lambda kv: sort_key(kv[0])):
        seeds = group(items, ("run", "learner", "seed"))
        series = [
            sorted((r["env_steps"], r[metric]) for r in s if r.get(metric) is not None)
            for s in seeds.values()
        ]
        series = [s for s in series if s]
        if not series:
            continue
        xs = np.asarray([x for x, _ in max(series, key=len)], float)
        ys = np.stack([np.interp(xs, [p[0] for p in s], [p[1] for p in s]) for s in series])
        stats = [iqm_interval([col], metric) for col in ys.T]
        label = f"{_label(keys, cond)} (n={len(series)})"
        (line,) = ax.plot(xs, [s.point for s in stats], marker="o", markersize=3, label=label)
        if len(series) > 1:
            ax.fill_between(
                xs, [s.low for s in stats], [s.high for s in stats], alpha=0.2, color=line.get_color()
            )
    ax.set_xlabel("env steps", fontsize=8)
    ax.set_ylabel(metric.removeprefix("eval/").replace("_", " ") + " (eval)", fontsize=8)
    if metric in ("eval/success", "eval/time_at_goal_frac"):
        ax.set_ylim(-0.02, 1.02)
    else:
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)


def plot_compare(curves: list[dict], envs: list[str], by: str, metrics: list[str], out: Path, title: str) -> Path:
    """``launch/compare.py``'s figure: a row per metric, a column per env, a line per value of the rows'
    ``group`` (the config field ``by``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(metrics), len(envs), squeeze=False, dpi=DPI,
                             figsize=(PANEL_IN[0] * len(envs), PANEL_IN[1] * len(metrics)))  # fmt: skip
    for col, env in enumerate(envs):
        rows = [c for c in curves if c["env"] == env]
        for row, metric in enumerate(metrics):
            draw_curves(axes[row][col], rows, ("group",), metric)
            axes[row][col].set_title(env, fontsize=9)
            if legend := axes[row][col].get_legend():
                legend.set_title(by, prop={"size": 6})
    return _finish(plt, fig, out, title)


# Result fields a study plots on a [0, 1] axis, with their axis labels.
FINAL_METRICS = {
    "eval/success": "final success (any time)",
    "eval/time_at_goal_frac": "time at goal (frac of episode)",
}


def plot_final(
    results: list[dict],
    envs: list[str],
    x: str,
    lines: tuple[str, ...],
    out: Path,
    title: str,
    metric: str = "eval/success",
) -> Path:
    """Final success vs the study's variable (log2 axis): IQM over seeds, 95 % bootstrap error bars."""
    plt, fig, axes = _figure(envs)
    for ax, env in zip(axes, envs, strict=False):
        rs = [r for r in results if r["env"] == env]
        line_groups = group(rs, lines) if lines else {(): rs}
        base = [r for r in rs if r.get("scaled") == "base"]  # width_vs_depth: the base belongs to both lines
        for line, items in sorted(line_groups.items(), key=lambda kv: sort_key(kv[0])):
            if line == ("base",):
                continue
            if base and lines == ("scaled",):
                items = base + items
            points = sorted(group(items, (x,)).items())
            xs = [p[0][0] for p in points]
            stats = [iqm_interval([[r[metric] for r in p[1]]], metric) for p in points]
            ax.errorbar(
                xs,
                [s.point for s in stats],
                yerr=_yerr(stats),
                marker="o",
                capsize=3,
                label=(f"scaled: {line[0]}" if lines == ("scaled",) else _label(lines, line) or "IQM") + _seeds(stats),
            )
        if x == "params":  # matched budgets sit close together: plain log ticks, not one per value
            ax.set_xscale("log")
        else:
            _log2_axis(ax, [r[x] for r in rs])
        ax.set_title(env, fontsize=9)
        ax.set_xlabel({"params": "parameters (actor + critic)"}.get(x, x.replace("_", " ")), fontsize=8)
        ax.set_ylabel(FINAL_METRICS[metric], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7)
    return _finish(plt, fig, out, title)


def plot_grid(results: list[dict], envs: list[str], out: Path, metric: str = "eval/success") -> Path:
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
            stats = [iqm_interval([[r[metric] for r in cells.get((c, ld), [])]], metric) for c in collectors]
            xs = np.arange(len(collectors)) + (j - (len(learners) - 1) / 2) * width
            means = [0.0 if not math.isfinite(s.point) else s.point for s in stats]
            ax.bar(xs, means, width, yerr=_yerr(stats), capsize=3, label=f"learner d{ld}{_seeds(stats)}")
            for x, m in zip(xs, means, strict=True):
                ax.text(x, m + 0.02, f"{m:.2f}", ha="center", fontsize=7)
        ax.set_xticks(range(len(collectors)), [f"collector d{c}" for c in collectors], fontsize=8)
        ax.set_title(env, fontsize=9)
        ax.set_ylabel(FINAL_METRICS[metric], fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return _finish(plt, fig, out, "decoupling: train-only learners by collector depth")


def plot_coverage(results: list[dict], envs: list[str], by: str, out: Path) -> Path:
    """Exploration: fraction of free cells visited vs the collector's depth."""
    plt, fig, axes = _figure(envs)
    per_run = list({r["run"]: r for r in results}.values())
    for ax, env in zip(axes, envs, strict=False):
        points = sorted(group([r for r in per_run if r["env"] == env], (by,)).items())
        metric = "coverage/cells_visited_frac"
        stats = [iqm_interval([[r[metric] for r in p[1]]], metric) for p in points]
        ax.errorbar([p[0][0] for p in points], [s.point for s in stats], yerr=_yerr(stats), marker="o",
                    capsize=3, label=f"IQM{_seeds(stats)}")  # fmt: skip
        ax.legend(fontsize=7)
        _log2_axis(ax, [p[0][0] for p in points])
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("collector depth", fontsize=8)
        ax.set_ylabel("cells visited (frac)", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    return _finish(plt, fig, out, "exploration coverage")
