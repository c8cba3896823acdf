"""The README's headline job on each replay backend and lane, interleaved: success, wall time and CPU.

    python benchmarks/headline_backends.py [--repeats 3] [--total_env_steps 300000]

Runs ``launch/run.py --topology collector_deep_learner_shallow --env point_mass_walls`` as a user does,
cycling through the cells (pinned lane + Reverb, pinned lane + Ray, latest lane + Ray: those whose
virtual environment exists) so the machine's load falls on every cell alike. CPU seconds are the whole
machine's while the run runs (``/proc/stat``: the Ray roles are not children the driver reaps), so
run it on a quiet machine; the load average is printed. Prints one row per run and the mean per cell
with its ratio to the first cell.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELLS = (("pinned", ".venv", "reverb"), ("pinned", ".venv", "ray"), ("latest", ".venv-latest", "ray"))


def _machine_cpu() -> float:
    """CPU seconds every core of this machine has been busy (``/proc/stat``). The Ray roles are not
    children the driver reaps (``RUSAGE_CHILDREN`` saw ~10 % of them), so the run's CPU is read as the
    machine's during the run: on a quiet machine that is the run's; the load is printed beside it."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_once(venv: str, backend: str, total: int, workdir: Path) -> dict:
    """One headline run; its wall and CPU seconds and the final figures of both learners."""
    run_dir = workdir / f"{venv.strip('.')}-{backend}-{time.time_ns()}"
    cmd = [str(ROOT / venv / "bin" / "python"), str(ROOT / "launch" / "run.py"), "--topology",
           "collector_deep_learner_shallow", "--env", "point_mass_walls", "--replay", backend,
           "--total_env_steps", str(total), "--noprogress", "--run_dir", str(run_dir)]  # fmt: skip
    cpu0, t0 = _machine_cpu(), time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall, cpu = time.perf_counter() - t0, _machine_cpu() - cpu0
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    summary = json.loads((run_dir / "summary.json").read_text())
    learners = {r["learner"]: r for r in summary["learners"]}
    steps = summary["collector"]["env_steps"]
    return {
        "wall_s": wall, "cpu_s": cpu, "env_steps": steps, "cpu_ms_per_kstep": 1e6 * cpu / steps,
        "success_d32": learners["collector_learner"]["eval/success"],
        "success_d4": learners["learner1_d4"]["eval/success"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--total_env_steps", type=int, default=300_000)
    args = parser.parse_args()
    cells = [c for c in CELLS if (ROOT / c[1] / "bin" / "python").exists()]
    print(f"cells: {', '.join(f'{lane}/{backend}' for lane, _, backend in cells)}; load {os.getloadavg()}")
    rows: dict[tuple, list[dict]] = {c: [] for c in cells}
    with tempfile.TemporaryDirectory(prefix="headline-") as tmp:
        for rep in range(args.repeats):
            for cell in cells:
                r = run_once(cell[1], cell[2], args.total_env_steps, Path(tmp))
                rows[cell].append(r)
                shown = " ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
                print(f"rep {rep} {cell[0]}/{cell[2]}: {shown}", flush=True)
    print("\n| lane / backend | runs | wall s | CPU s | CPU ms per 1k env steps | success d32 | success d4 | wall ratio | CPU ratio |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    base = None
    for cell, runs in rows.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            print(f"| {cell[0]}/{cell[2]} | 0 | failed: {runs[0].get('error')} |")
            continue
        mean = {k: sum(r[k] for r in ok) / len(ok) for k in ok[0]}
        base = base or mean
        print(f"| {cell[0]}/{cell[2]} | {len(ok)} | {mean['wall_s']:.0f} | {mean['cpu_s']:.0f} | "
              f"{mean['cpu_ms_per_kstep']:.0f} | {mean['success_d32']:.2f} | {mean['success_d4']:.2f} | "
              f"{mean['wall_s'] / base['wall_s']:.2f} | {mean['cpu_s'] / base['cpu_s']:.2f} |")  # fmt: skip
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
