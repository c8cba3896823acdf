"""Plots of metric rows, shared by run directories, studies and benchmarks."""

from __future__ import annotations

from pathlib import Path


def plot_success(curves: dict[str, list[dict]], out: Path, title: str = "") -> Path:
    """Success (deterministic eval) vs env steps, one curve per role/learner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, rows in curves.items():
        rows = [r for r in rows if "eval/success" in r]
        if rows:
            ax.plot(
                [r["env_steps"] for r in rows], [r["eval/success"] for r in rows], marker="o", label=label
            )
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate (eval)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
