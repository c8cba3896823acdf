"""Speed of the CRL core as depth grows: compile time, update steps/s, memory, and the Ant loop.

    .venv/bin/python benchmarks/depth_scaling.py [--quick] [--cap 240] [--json out.json]
    .venv/bin/python benchmarks/depth_scaling.py --compare [--compare_depths 4 16 64 256 1024]
    .venv/bin/python benchmarks/depth_scaling.py --memory [--memory_depth 1024]

``--compare``: ours (``agent.update``, variants from ``VARIANTS``) against a paper-shaped baseline
(``learner/reference.py``: unrolled trunks, the paper's update order and sample reuse, the B×B×d
InfoNCE form) in one subprocess per depth, interleaved round by round, wall and CPU seconds
(``time.process_time``) per update, and baseline / ours per round; above ``--baseline_max_depth`` ours
alone (compile and one update). ``--memory``: one update with and without ``remat`` at depth 1024: XLA's
buffer count (arguments + outputs − donated aliases + temporaries) and measured RSS, and the largest
batch that fits 80 GB, extrapolated from XLA's count at three batch sizes.

Without those flags, three measurements, printed as tables:

1. ``agent.update`` (jitted) for critic = actor depth in ``--depths`` at one width and batch: compile
   time (lower + compile), steady-state steps/s, XLA's memory analysis and the process peak RSS.
2. The same update with the residual blocks unrolled in Python (``scan=False``) instead of
   ``nn.scan``: compile time, and the unrolled/scanned ratio.
3. The ``single`` topology on Ant (spring backend): env steps/s of collection alone and of the whole
   fused loop (collect + replay + relabel + updates) at the paper's update-to-data ratio.

Every cell runs in its own subprocess (``benchmarks/depth_cells.py``) so that peak RSS is per cell
and a cell that exceeds its wall-clock cap is killed and reported as a timeout instead of hanging the
run. A cell reports what it measured so far as JSON lines on stdout, so a killed cell still yields
e.g. its compile time or a lower bound on it. This file is the parent: it starts the cells and
prints their tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from depth_cells import MARK, Cell

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
CELL_SCRIPT = Path(__file__).resolve().parent / "depth_cells.py"
PAPER_UPDATES_PER_ENV_STEP = 800 / (512 * 62)  # 800 minibatches per collection of 512 envs x 62 steps


def _proc_usage(pid: int) -> tuple[float | None, float | None]:
    """(peak RSS MiB, CPU seconds) of a running process from /proc (Linux); None where unreadable."""
    rss = cpu = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, ValueError, IndexError):
        pass
    return rss, cpu


def run_cell(kind: str, params: Cell, cap: float) -> Cell:
    """Run one cell in a fresh interpreter under a wall-clock cap; merge what it reported."""
    cmd = [sys.executable, str(CELL_SCRIPT), json.dumps({"kind": kind, **params, "cap": cap})]
    start, hwm, cpu = time.time(), None, None
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result: Cell = {"kind": kind, **params, "cap": cap, "timed_out": False}
    try:
        out, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        hwm, cpu = _proc_usage(proc.pid)  # the child's last report predates the work that was cut off
        proc.kill()  # our own child, by its handle
        out, err = proc.communicate()
        result["timed_out"] = True
    result["wall_s"] = time.time() - start
    result["lines"] = [json.loads(ln[len(MARK) :]) for ln in out.splitlines() if ln.startswith(MARK)]
    for line in result["lines"]:
        result.update(line)
    if result["timed_out"] and hwm is not None:
        result["peak_rss_mb"] = max(hwm, result.get("peak_rss_mb", 0.0))
    if result["timed_out"] and "compile_started_epoch" in result and "compile_s" not in result:
        result["compile_lower_bound_s"] = start + result["wall_s"] - result["compile_started_epoch"]
        if cpu is not None:
            result["compile_cpu_lower_bound_s"] = cpu - result["compile_started_cpu_s"]
    if proc.returncode and not result["timed_out"]:
        tail = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no stderr"]
        result["error"] = f"exit {proc.returncode}: {tail[0][:200]}"
    return result


def _fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _compile_str(r: Cell, what: str = "compile") -> str:
    """``what`` is 'compile' (wall seconds) or 'compile_cpu' (CPU seconds); a killed compile is a bound."""
    if f"{what}_s" in r:
        return f"{r[f'{what}_s']:.1f}"
    if f"{what}_lower_bound_s" in r:
        return f"> {r[f'{what}_lower_bound_s']:.0f} (cap)"
    return "error" if "error" in r else ("timeout" if r.get("timed_out") else "-")


def _ratio_str(u: Cell, s: Cell, what: str) -> str:
    """unrolled / scanned compile time; a lower bound where the unrolled compile was cut off."""
    if f"{what}_s" not in s:
        return "-"
    if f"{what}_s" in u:
        return f"{u[f'{what}_s'] / s[f'{what}_s']:.1f}x"
    if f"{what}_lower_bound_s" in u:
        bound = u[f"{what}_lower_bound_s"] / s[f"{what}_s"]
        return f"> {bound:.0f}x" if bound >= 10 else f"> {bound:.1f}x"
    return "-"


def _rss_str(r: Cell) -> str:
    """Peak RSS; for a killed cell the peak up to the kill, hence a lower bound."""
    rss = r.get("peak_rss_mb")
    return "-" if rss is None else (f">= {rss:.0f}" if r["timed_out"] else f"{rss:.0f}")


def _steps_str(r: Cell) -> str:
    if "steps_per_s" in r:
        return f"{r['steps_per_s']:.3g}"
    if r.get("compile_only"):
        return "-"
    return "timeout" if r["timed_out"] else ("error" if "error" in r else "-")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, so the output can be pasted into docs/benchmarks.md as is."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def update_table(rows: list[Cell]) -> str:
    body = [
        [str(r["depth"]), _fmt(r.get("params_m"), ".2f"), _compile_str(r), _steps_str(r),
         _fmt(1e3 / r["steps_per_s"] if "steps_per_s" in r else None, ".1f"), str(r.get("timed_steps", "-")),
         _fmt(r.get("xla_arg_mb")), _fmt(r.get("xla_temp_mb")), _fmt(r.get("xla_out_mb")),
         _fmt(r.get("xla_total_mb")), _rss_str(r)]
        for r in rows
    ]  # fmt: skip
    header = ["depth", "params (M)", "compile s", "steps/s", "ms/step", "timed steps",
              "XLA arg MiB", "XLA temp MiB", "XLA out MiB", "XLA total MiB", "peak RSS MiB"]  # fmt: skip
    return table(header, body)


def compile_table(scanned: dict[int, Cell], unrolled: dict[int, Cell]) -> str:
    body = []
    for depth, u in unrolled.items():
        s = scanned.get(depth, {})
        body.append([str(depth), _compile_str(s) if s else "-", _compile_str(u), _ratio_str(u, s, "compile"),
                     _compile_str(s, "compile_cpu") if s else "-", _compile_str(u, "compile_cpu"),
                     _ratio_str(u, s, "compile_cpu"), _steps_str(s) if s else "-", _steps_str(u), _rss_str(u)])  # fmt: skip
    header = ["depth", "scanned compile s", "unrolled compile s", "unrolled / scanned",
              "scanned compile CPU s", "unrolled compile CPU s", "CPU unrolled / scanned",
              "scanned steps/s", "unrolled steps/s", "unrolled peak RSS MiB"]  # fmt: skip
    return table(header, body)


def env_table(r: Cell) -> str:
    collect, loop = r.get("collect_env_steps_per_s"), r.get("loop_env_steps_per_s")
    status = "timeout" if r["timed_out"] else r.get("error", "-")
    body = [
        ["collection alone (jitted unroll, stochastic policy)", _fmt(r.get("collect_compile_s")),
         _fmt(collect, ",.0f") if collect else status, str(r.get("collect_calls", "-"))],
        ["whole loop (train_epoch: collect + insert + sample + relabel + updates)", _fmt(r.get("loop_compile_s")),
         _fmt(loop, ",.0f") if loop else status, str(r.get("loop_calls", "-"))],
    ]  # fmt: skip
    out = table(["what", "compile s", "env steps/s", "timed calls"], body)
    if collect and loop:
        out += f"\n\ncollection / whole loop = {collect / loop:.1f}x; "
        out += (
            f"updates/s inside the loop = {r['loop_updates_per_s']:.1f}; peak RSS {r['peak_rss_mb']:.0f} MiB"
        )
    return out


VARIANTS: dict[str, Cell] = {  # name -> TrunkConfig overrides of ours (actor = critic) and donation
    "ours": {},
    "unroll2": {"trunk": {"scan_unroll": 2}},
    "unroll4": {"trunk": {"scan_unroll": 4}},
    "unrolled": {"trunk": {"scan": False}},
    "remat": {"trunk": {"remat": True}},
    "no_donate": {"donate": False},
    "bf16": {"trunk": {"compute_dtype": "bfloat16"}},
    "bf16_remat": {"trunk": {"compute_dtype": "bfloat16", "remat": True}},
}


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return (
        None
        if not xs
        else (xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]))
    )


def compare_rows(r: Cell) -> list[list[str]]:
    """One row per program of a compare cell: compile, ms per update, baseline / program per round."""
    compiles = {ln["variant"]: ln for ln in r["lines"] if "compile_s" in ln}
    rounds: dict[str, dict[int, Cell]] = {}
    for ln in r["lines"]:
        if "round" in ln:
            rounds.setdefault(ln["variant"], {})[ln["round"]] = ln
    base = rounds.get("baseline", {})
    rows = []
    for name in [*compiles, *(["baseline"] if "baseline" not in compiles and "baseline" in rounds else [])]:
        c, got = compiles.get(name, {}), rounds.get(name, {})
        per = lambda ln, f: 1e3 * ln[f] / ln["calls"]  # noqa: E731 - ms per update
        wall, cpu = (
            [per(x, "round_wall_s") for x in got.values()],
            [per(x, "round_cpu_s") for x in got.values()],
        )
        ratio_w = [base[i]["round_wall_s"] / x["round_wall_s"] for i, x in got.items() if i in base]
        ratio_c = [base[i]["round_cpu_s"] / x["round_cpu_s"] for i, x in got.items() if i in base]
        compile_str = f"{c['compile_s']:.1f} ({c['compile_cpu_s']:.1f})" if c else (
            f"> {r['compile_lower_bound_s']:.0f} (cap)" if name == "baseline" and "compile_lower_bound_s" in r
            else "timeout" if r["timed_out"] else r.get("error", "-"))  # fmt: skip
        spread = lambda xs: f"{min(xs):.2f}–{max(xs):.2f}" if xs else "-"  # noqa: E731
        rows.append([str(r["depth"]), name, compile_str, _fmt(c.get("xla_temp_mb")), _fmt(_median(wall)),
                     _fmt(_median(cpu)), str(len(got)),
                     _fmt(_median(ratio_w), ".2f") if name != "baseline" and ratio_w else "-",
                     _fmt(_median(ratio_c), ".2f") if name != "baseline" and ratio_c else "-",
                     spread(ratio_c) if name != "baseline" else "-"])  # fmt: skip
    if r.get("timed_out") and "baseline" not in compiles and "compile_lower_bound_s" in r:
        rows.append([str(r["depth"]), "baseline", f"> {r['compile_lower_bound_s']:.0f} (cap)"] + ["-"] * 7)
    return rows


def compare_table(cells: list[Cell]) -> str:
    header = ["depth", "program", "compile s (CPU s)", "XLA temp MiB", "ms/update wall", "ms/update CPU",
              "rounds", "baseline / this, wall", "baseline / this, CPU", "CPU ratio min–max"]  # fmt: skip
    return table(header, [row for r in cells for row in compare_rows(r)])


def machine() -> str:
    name = platform.processor() or "?"
    try:
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            if line.startswith("Model name"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{name}, nproc {os.cpu_count()}, jax {jax.__version__} on {jax.devices()[0].platform}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: width 64, depths 4 and 16, small caps")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64, 256, 1024])
    ap.add_argument("--unrolled_depths", type=int, nargs="*", default=[4, 16, 64, 256, 1024])
    ap.add_argument("--cap", type=float, default=240.0, help="wall-clock seconds per update cell")
    ap.add_argument("--unrolled_cap", type=float, default=600.0, help="wall-clock seconds per unrolled cell")
    ap.add_argument("--seconds", type=float, default=10.0, help="target timed seconds per measurement")
    ap.add_argument("--unrolled_steps", action="store_true", help="also time steps of unrolled cells")
    ap.add_argument("--skip_env", action="store_true", help="skip the Ant single-topology measurement")
    ap.add_argument("--env_cap", type=float, default=900.0)
    ap.add_argument("--num_envs", type=int, default=64)
    ap.add_argument("--unroll_length", type=int, default=62)
    ap.add_argument("--episode_length", type=int, default=200)
    ap.add_argument("--env_depth", type=int, default=4)
    ap.add_argument("--collections_per_epoch", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write all raw results here")
    ap.add_argument(
        "--compare",
        action="store_true",
        help="only ours vs the paper-shaped baseline (interleaved), then exit",
    )
    ap.add_argument("--compare_depths", type=int, nargs="+", default=[4, 16, 64, 256, 1024])
    ap.add_argument("--variants", nargs="+", default=["ours"], choices=list(VARIANTS))
    ap.add_argument(
        "--baseline_max_depth",
        type=int,
        default=64,
        help="no baseline above this depth (its unrolled compile grows ~5x per 4x depth)",
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3, help="updates per program per round")
    ap.add_argument("--compare_cap", type=float, default=900.0, help="wall seconds per compare/memory cell")
    ap.add_argument(
        "--memory",
        action="store_true",
        help="only the remat on/off memory of one update at --memory_depth, then exit",
    )
    ap.add_argument("--memory_depth", type=int, default=1024)
    if ap.parse_known_args(argv)[0].quick:  # quick changes the defaults; explicit flags still win
        ap.set_defaults(width=64, depths=[4, 16], unrolled_depths=[4, 16], cap=60.0, unrolled_cap=60.0,
                        env_cap=120.0, seconds=1.5, num_envs=16, unroll_length=20, episode_length=40,
                        collections_per_epoch=1)  # fmt: skip
    args = ap.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    print(f"# CRL core depth scaling — {machine()}; load avg {os.getloadavg()[0]:.2f}", flush=True)
    if args.compare:
        return compare_main(args)
    if args.memory:
        return memory_main(args)
    base = {"width": args.width, "batch": args.batch, "seconds": args.seconds}
    scanned: dict[int, Cell] = {}
    for depth in args.depths:
        scanned[depth] = run_cell("update", {**base, "depth": depth, "scan": True}, args.cap)
        print(f"  scanned depth {depth}: {_compile_str(scanned[depth])} s compile, "
              f"{_steps_str(scanned[depth])} steps/s", flush=True)  # fmt: skip
    unrolled: dict[int, Cell] = {}
    for depth in args.unrolled_depths:
        p = {**base, "depth": depth, "scan": False, "compile_only": not (args.unrolled_steps or args.quick)}
        unrolled[depth] = run_cell("update", p, args.unrolled_cap)
        print(f"  unrolled depth {depth}: {_compile_str(unrolled[depth])} s compile", flush=True)
    env: Cell = {}
    if not args.skip_env:
        steps = args.num_envs * args.unroll_length
        env_p = {"num_envs": args.num_envs, "unroll_length": args.unroll_length, "batch": args.batch,
                 "num_minibatches": max(1, round(PAPER_UPDATES_PER_ENV_STEP * steps)),
                 "episode_length": args.episode_length, "min_replay": args.episode_length,
                 "depth": args.env_depth, "width": args.width, "seconds": args.seconds,
                 "collections_per_epoch": args.collections_per_epoch}  # fmt: skip
        env = run_cell("env", env_p, args.env_cap)
    print(
        f"\n## agent.update, scanned trunk (width {args.width}, batch {args.batch}, actor = critic depth)\n"
    )
    print(update_table(list(scanned.values())))
    if unrolled:
        print(f"\n## compile: nn.scan over blocks vs unrolled Python loop (width {args.width})\n")
        print(compile_table(scanned, unrolled))
    if env:
        print(f"\n## single topology on Ant (spring): {env['num_envs']} envs x {env['unroll_length']} steps, "
              f"{env['num_minibatches']} updates of batch {env['batch']} per collection "
              f"(paper ratio 800/31744), depth {env['depth']} width {env['width']}, "
              f"episode_length {env['episode_length']}, min_replay_steps_per_env {env['min_replay']}\n")  # fmt: skip
        print(env_table(env))
    print(f"\nload avg at end {os.getloadavg()[0]:.2f}; total wall {time.perf_counter() - T0:.0f} s")
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "scanned": scanned, "unrolled": unrolled,
               "env": env}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


def memory_main(args: argparse.Namespace) -> dict[str, Any]:
    """Remat on / off at ``--memory_depth``: XLA's count per batch, executed RSS, largest batch for 80 GB."""
    cells = {}
    for remat in (False, True):
        p = {"depth": args.memory_depth, "width": args.width, "remat": remat, "execute": True,
             "batches": [args.batch, 8 * args.batch, 16 * args.batch, 32 * args.batch]}  # fmt: skip
        cells[remat] = run_cell("memory", p, args.compare_cap)
        print(
            f"  remat={remat} done ({cells[remat]['wall_s']:.0f} s, load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    rows, fits = [], {}
    for remat, r in cells.items():
        by_batch = {ln["batch"]: ln for ln in r["lines"] if "batch" in ln}
        b0 = by_batch.get(args.batch, {})
        rows.append([("on" if remat else "off"), _fmt(b0.get("compile_s")), _fmt(b0.get("compile_cpu_s")),
                     _fmt(b0.get("xla_arg_mb"), ",.0f"), _fmt(b0.get("xla_temp_mb"), ",.0f"),
                     _fmt(b0.get("xla_peak_mb"), ",.0f"), _fmt(r.get("rss_before_mb"), ",.0f"),
                     _fmt(r.get("rss_peak_mb"), ",.0f"), _fmt(r.get("rss_rise_mb"), ",.0f"),
                     _fmt(r.get("step_cpu_s")), r.get("error", "")])  # fmt: skip
        fits[remat] = _largest_batch(by_batch, 80e9)
    print(f"\n## memory of one update at depth {args.memory_depth} (width {args.width}, batch {args.batch}, "
          f"actor = critic depth, train state donated)\n")  # fmt: skip
    print(table(["remat", "compile s", "compile CPU s", "XLA arg MiB", "XLA temp MiB", "XLA peak MiB",
                 "RSS before MiB", "RSS peak MiB", "RSS rise MiB", "update CPU s", "error"], rows))  # fmt: skip
    on, off = cells[True], cells[False]
    for what in ("xla_peak_mb", "xla_temp_mb"):
        a = next((ln[what] for ln in on["lines"] if ln.get("batch") == args.batch), None)
        b = next((ln[what] for ln in off["lines"] if ln.get("batch") == args.batch), None)
        if a and b:
            print(f"\nremat / no remat, {what}: {a / b:.2f}")
    if on.get("rss_rise_mb") and off.get("rss_rise_mb"):
        print(f"remat / no remat, RSS rise: {on['rss_rise_mb'] / off['rss_rise_mb']:.2f}; "
              f"RSS peak: {on['rss_peak_mb'] / off['rss_peak_mb']:.2f}")  # fmt: skip
    for remat, fit in fits.items():
        print(f"largest batch for 80 GB (remat {'on' if remat else 'off'}): {fit}")
    results = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "memory": {str(k): v for k, v in cells.items()},
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


def _largest_batch(by_batch: dict[int, Cell], limit_bytes: float) -> str:
    """Fit XLA's peak = a + b·B + c·B² through the three largest batches and solve for ``limit_bytes``.

    An extrapolation from the CPU compiler's buffer assignment (a GPU's differs somewhat); the B²
    term is the B×B logits and their gradients.
    """
    pts = sorted((b, ln["xla_peak_mb"] * 2**20) for b, ln in by_batch.items() if "xla_peak_mb" in ln)
    if len(pts) < 3:
        return "-"
    (x0, y0), (x1, y1), (x2, y2) = pts[-3:]  # the largest: small batches hide in reused buffers
    c, b, a = np.polyfit([x0, x1, x2], [y0, y1, y2], 2)
    roots = [r.real for r in np.roots([c, b, a - limit_bytes]) if abs(r.imag) < 1e-9 and r.real > 0]
    per_sample = (y2 - y0) / (x2 - x0) / 2**20
    best = int(min(roots)) if roots else None
    return (f"~{best:,} (fit a + bB + cB² through B = {x0}, {x1}, {x2}: fixed {a / 2**30:.2f} GiB, "
            f"{per_sample:.2f} MiB per sample between B = {x0} and {x2}, {c * 2**-20:.2e} MiB per B²; "
            "extrapolated)")  # fmt: skip


def compare_main(args: argparse.Namespace) -> dict[str, Any]:
    """Ours vs the paper-shaped baseline at each depth, one subprocess per depth, interleaved inside."""
    cells = []
    for depth in args.compare_depths:
        with_baseline = depth <= args.baseline_max_depth
        p = {"depth": depth, "width": args.width, "batch": args.batch,  # ours alone: compile and one update
             "rounds": args.rounds if with_baseline else 1, "calls": args.calls if with_baseline else 1,
             "variants": [{"name": n, **VARIANTS[n]} for n in args.variants], "baseline": with_baseline}  # fmt: skip
        cells.append(run_cell("compare", p, args.compare_cap))
        print(
            f"  depth {depth} done ({cells[-1]['wall_s']:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True
        )
    print(f"\n## ours vs paper-shaped baseline (width {args.width}, batch {args.batch}, actor = critic depth; "
          f"{args.rounds} rounds x {args.calls} updates per program, interleaved; ratios are medians of "
          f"per-round ratios)\n")  # fmt: skip
    print(compare_table(cells))
    print(f"\nload avg at end {os.getloadavg()[0]:.2f}; total wall {time.perf_counter() - T0:.0f} s")
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "compare": cells}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
