"""``launch/compare.py`` and the one run-directory layout it reads (rundir/layout.py).

Run directories are written here by hand, with fixed numbers, in each layout a run can have: today's
(summary.json naming every learner's folder, ``single`` and distributed alike), a K-seed run, and the
older ones (``single`` with only complete.json, distributed summary rows without a folder). The
figures are checked against the IQM computed by hand; real runs' summaries are checked by
test_run_cli and test_distributed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image

from deepcrl.rundir.layout import learners

pytestmark = pytest.mark.core


def _write_run(run_dir: Path, config: dict, folders: dict[str, list[float]], summary_rows: list[dict] | None) -> None:
    """A run whose learner in folder f evaluated success values ``folders[f]`` at 1000, 2000, … env steps."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"env": "point_mass", "seed": 0, **config}))
    for folder, successes in folders.items():
        (run_dir / folder).mkdir(parents=True, exist_ok=True)
        rows = [{"env_steps": 1000 * (i + 1), "eval/success": s, "eval/time_at_goal": 100 * s}
                for i, s in enumerate(successes)]  # fmt: skip
        (run_dir / folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary_rows is not None:
        (run_dir / "summary.json").write_text(json.dumps({"learners": summary_rows}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    single = {"topology": "single", "critic_depth": 4}
    _write_run(root / "new_single", single, {".": [0.0, 0.2]},
               [{"learner": "single", "seed": 0, "depth": "4", "folder": "."}])
    _write_run(root / "k_seeds", {**single, "num_seeds": 2}, {"seed_0": [0.0, 0.4], "seed_1": [0.0, 0.6]},
               [{"learner": "single", "seed": 0, "depth": "4", "folder": "seed_0"},
                {"learner": "single", "seed": 1, "depth": "4", "folder": "seed_1"}])
    _write_run(root / "old_single", single, {".": [0.0, 0.8]}, None)  # before summary.json was shared
    (root / "old_single" / "complete.json").write_text(json.dumps({"eval/success": 0.8}))
    _write_run(root / "old_distributed", {"topology": "decoupling", "critic_depth": 8},
               {"collector_learner": [0.1, 0.9], "learner1_d4": [0.0, 1.0]},
               [{"learner": "collector_learner", "depth": "8"}, {"learner": "learner1_d4", "depth": "4"}])
    return {p.name: p for p in root.iterdir()}  # fmt: skip


def test_every_layout_names_its_learners_and_their_folders(runs):
    found = {name: [(f.name, f.folder.name, f.seed, f.depth) for f in learners(path)] for name, path in runs.items()}
    assert found == {
        "new_single": [("single", "new_single", 0, 4)],
        "k_seeds": [("single", "seed_0", 0, 4), ("single", "seed_1", 1, 4)],
        "old_single": [("single", "old_single", 0, 4)],
        "old_distributed": [("collector_learner", "collector_learner", 0, 8), ("learner1_d4", "learner1_d4", 0, 4)],
    }  # fmt: skip


def _compare(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch" / "compare.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _rows(table: str) -> dict[str, list[str]]:
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:] if line.startswith("|")]
    return {c[1]: c[2:] for c in cells}


def test_compare_groups_learners_of_every_run_by_a_field(runs, tmp_path):
    """By critic_depth: depth 4 gathers five learners of four runs (final successes 0.2, 0.4, 0.6, 0.8,
    1.0: IQM (0.4 + 0.6 + 0.8) / 3 = 0.6), depth 8 the one collector learner (0.9, no interval)."""
    res = _compare(*map(str, runs.values()), "--by", "critic_depth", "--out", "out/c.png", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    table = (tmp_path / "out" / "c.md").read_text()
    rows = _rows(table[table.index("| env"):])
    assert rows["4"][0] == "5" and rows["4"][3].startswith("0.600 [") and rows["8"][0] == "1", rows
    assert rows["8"][2:] == ["90.0", "0.900"], rows
    low, high = (float(v) for v in rows["4"][3].split("[")[1].rstrip("]").split(","))
    assert 0.2 <= low < 0.6 < high <= 1.0  # a bootstrap interval of the five, within [0, 1]
    with Image.open(tmp_path / "out" / "c.png") as im:
        assert im.size == (750, 1200)  # one env column, two metric rows of 5 x 4 in at 150 dpi


def test_compare_without_a_field_draws_each_run(runs, tmp_path):
    res = _compare(str(runs["k_seeds"]), str(runs["new_single"]), "--out", "c.png", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(res.stdout)
    assert rows["k_seeds"][0] == "2" and rows["k_seeds"][3].startswith("0.500 [")  # seeds aggregated
    assert rows["new_single"] == ["1", "2,000", "20.0", "0.200"]


def test_compare_bad_input_is_one_line(runs, tmp_path):
    cases = [
        ((str(tmp_path / "nope"),), "is not a directory"),
        ((str(tmp_path),), "neither a run directory"),
        ((str(runs["new_single"]), "--by", "critic_dept"), "did you mean critic_depth?"),
        ((str(runs["new_single"]), "--out", "c.pdf"), "give a .png file"),
        ((), "give one or more run or study directories"),
        ((str(tmp_path / "garbled"),), "config.json does not parse"),
    ]
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "config.json").write_text("{not json")
    for args, message in cases:
        res = _compare(*args, cwd=tmp_path)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and message in res.stderr, (args, res.stderr)
