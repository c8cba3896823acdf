"""Test helper: a run folder's ``metrics.csv`` holds exactly its ``metrics.jsonl`` rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def assert_csv_equals_jsonl(folder: Path) -> list[dict]:
    """Every JSONL row, in order, is a CSV row with every field (columns: first-seen order; a field a
    row lacks is an empty cell). Returns the JSONL rows."""
    rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with (Path(folder) / "metrics.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == fields, (set(fields) - set(reader.fieldnames or []), folder)
        cells = list(reader)
    assert len(cells) == len(rows), (len(cells), len(rows), folder)
    for i, (row, cell) in enumerate(zip(rows, cells, strict=True)):
        expected = {k: str(row[k]) if k in row else "" for k in fields}
        assert cell == expected, (i, {k: (cell[k], expected[k]) for k in fields if cell[k] != expected[k]})
    return rows
