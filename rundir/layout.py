"""One run-directory layout for every topology, and where each learner's files are.

Every finished run (``single``, K seeds, every distributed topology) writes the same top level:

    RUN/config.json        the resolved config          RUN/provenance.json   code and stack, per session
    RUN/summary.json       the final row of every learner, each with the ``folder`` holding its files
    RUN/summary.md         the same as a table           RUN/success.png       the curves of every learner
    RUN/evaluations/       ``launch/evaluate.py``'s records

and each learner's folder holds ``metrics.jsonl``/``metrics.csv``, ``tensorboard/`` and ``checkpoints/``:
``RUN/<learner>/`` in a distributed run, ``RUN/`` itself for ``single``'s one agent, ``RUN/seed_<s>/`` for
seed s of a K-seed run. ``learners(run_dir)`` finds them in any run directory, also in one written
before ``summary.json`` was shared (``single``: ``complete.json``) or in one still running.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"
# A learner's own network, in its row of summary.json (a distributed run's learners differ in them).
NETWORK_FIELDS = ("critic_depth", "actor_depth", "critic_width", "actor_width")
SUMMARY_COLUMNS = (
    "learner", "seed", "depth", "updates", "samples_drawn", "env_steps", "eval/time_at_goal",
    "eval/time_at_goal_frac", "eval/success", "joined_at_env_steps",
)  # fmt: skip


@dataclass(frozen=True)
class LearnerFiles:
    """One learner of a run: its name, the folder of its metrics and checkpoints, its seed and depth."""

    name: str
    folder: Path
    seed: int
    depth: int | None
    final: dict  # its row of summary.json (empty while the run has none)

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def relative(folder: Path, run_dir: Path) -> str:
    """``folder`` as summary.json records it: relative to the run directory (which may move)."""
    return os.path.relpath(Path(folder).absolute(), Path(run_dir).absolute())


def learners(run_dir: Path) -> list[LearnerFiles]:
    """Every learner of the run in ``run_dir``, the driving one first."""
    run_dir = Path(run_dir)
    config, summary = read_json(run_dir / "config.json"), read_json(run_dir / SUMMARY_JSON)
    seed = int(config.get("seed", 0))
    if summary.get("learners"):
        return [_from_row(run_dir, row, seed) for row in summary["learners"]]
    if config.get("topology", "single") == "single":  # older, or not finished yet
        k = int(config.get("num_seeds", 1))
        depth = config.get("critic_depth")
        folders = [run_dir / f"seed_{s}" for s in range(k)] if k > 1 else [run_dir]
        final = read_json(run_dir / "complete.json")
        return [LearnerFiles("single", f, seed + s, depth, final if k == 1 else read_json(f / "complete.json"))
                for s, f in enumerate(folders)]  # fmt: skip
    roles = read_json(run_dir / "roles.json").get("roles", {})  # a distributed run still running
    names = [n for n, r in roles.items() if r.get("kind") == "learner"]
    return [LearnerFiles(n, run_dir / n, seed, None, {}) for n in names]


def _from_row(run_dir: Path, row: dict, seed: int) -> LearnerFiles:
    name = str(row.get("learner", "single"))
    folder = run_dir / row.get("folder", name)  # before rows named their folder: distributed ones only
    depth = row.get("depth")
    return LearnerFiles(name, folder.resolve(), int(row.get("seed", seed)),
                        int(depth) if depth not in (None, "") else None, row)  # fmt: skip


def summary_table(rows: list[dict]) -> str:
    """summary.md's table: one row per learner (the columns some row has)."""
    cols = [c for c in SUMMARY_COLUMNS if any(c in r for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(run_dir: Path, summary: dict, title: str, before: str = "", after: str = "") -> str:
    """``summary.json`` and ``summary.md`` (a title, the run's tag and notes, ``before``, the learners'
    table, ``after``); returns the table."""
    run_dir = Path(run_dir)
    (run_dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    table = summary_table(summary.get("learners", []))
    head = [f"# {title}", ""]
    if summary.get("tag"):
        head += [f"tag: `{summary['tag']}`", ""]
    if summary.get("notes"):
        head += [f"notes: {summary['notes']}", ""]
    (run_dir / SUMMARY_MD).write_text("\n".join(head) + f"\n{before}{table}\n{after}")
    return table
