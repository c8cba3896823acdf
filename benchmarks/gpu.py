"""The CRL core on one GPU, in one go: depth scaling, K seeds in one program, a short Ant run.

    bash benchmarks/gpu.sh [--quick] [--budget 540]      # sets up imports, then runs this file

Three parts, each in fresh processes (so that one part's compile caches and allocations do not move
the next), printed together as one Markdown table at the end:

1. ``depth``: one ``agent.update`` (width 256, batch 256, actor = critic depth, train state donated)
   at depths 4 … 1024 in four variants: float32, float32 + ``remat``, bfloat16 matmuls, bfloat16 +
   ``remat``; up to ``--baseline_max_depth`` also the paper-shaped baseline (``learner/reference.py``).
   Per program: compile seconds, milliseconds per update (median of interleaved rounds) and XLA's
   buffer count (arguments + outputs − donated aliases + temporaries), plus the process's measured
   device peak (``memory_stats``: all programs of that depth together). Uses the ``--compare`` cells of
   ``benchmarks/depth_scaling.py``.
2. ``seeds``: ``benchmarks/seeds_throughput.py``: K seeds of ``single`` in one vmapped program
   against K sequential one-seed epochs, small width: point_mass at K = 1, 2, 4, 8, Ant (spring) at
   K = 1, 4 (each Ant K takes ~40 s to build on an H200).
3. ``ant``: ``launch/run.py`` with the paper preset on Ant (512 envs, batch 512, depth 4, width 256)
   for a few epochs: env steps/s between the last two evaluations, SGD steps/s, wall time.

A part that would run past ``--budget`` seconds is cut short or skipped, and the table says so; the
script is meant to finish inside one 10-minute call on a lent machine (on an H200: depth ~280 s,
point_mass seeds ~80 s, Ant's short run ~60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import depth_scaling as ds  # noqa: E402 - the sibling benchmark's cells and formatting
import jax  # noqa: E402

from deepcrl.rundir.metrics import read_metrics  # noqa: E402

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # each process takes what it uses
ROOT = Path(__file__).resolve().parents[1]
T0 = time.perf_counter()
DEPTH_VARIANTS = ["ours", "remat", "bf16", "bf16_remat"]


def _left(budget: float) -> float:
    return budget - (time.perf_counter() - T0)


def _device() -> str:
    d = jax.devices()[0]
    return f"{getattr(d, 'device_kind', d.platform)} ({d.platform}), jax {jax.__version__}"


def depth_part(args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for i, depth in enumerate(args.depths):
        cap = min(args.depth_cap, _left(args.depth_budget) / max(1, len(args.depths) - i) * 2)
        if cap < 20:
            rows.append(["depth", f"d{depth}", "skipped: budget", "", "", "", ""])
            continue
        p = {"depth": depth, "width": args.width, "batch": args.batch, "rounds": args.rounds,
             "calls": args.calls, "variants": [{"name": n, **ds.VARIANTS[n]} for n in DEPTH_VARIANTS],
             "baseline": depth <= args.baseline_max_depth}  # fmt: skip
        r = ds.run_cell("compare", p, cap)
        print(f"  depth {depth}: {r['wall_s']:.0f} s{' (cap hit)' if r['timed_out'] else ''}", flush=True)
        compiles = {ln["variant"]: ln for ln in r["lines"] if "compile_s" in ln}
        rounds: dict[str, list[float]] = {}
        for ln in r["lines"]:
            if "round" in ln:
                rounds.setdefault(ln["variant"], []).append(1e3 * ln["round_wall_s"] / ln["calls"])
        peak = next((ln["device_peak_mb"] for ln in r["lines"] if "device_peak_mb" in ln), None)
        base_ms = ds._median(rounds.get("baseline", []))
        for name in [*DEPTH_VARIANTS, *(["baseline"] if p["baseline"] else [])]:
            c, ms = compiles.get(name), ds._median(rounds.get(name, []))
            if c is None:
                status = "timeout" if r["timed_out"] else r.get("error", "not reached")
                rows.append(["depth", f"d{depth} {name}", status, "", "", "", ""])
                continue
            vs = f"baseline/this {base_ms / ms:.2f}" if base_ms and ms and name != "baseline" else ""
            rows.append(["depth", f"d{depth} {name}", f"{c['compile_s']:.1f}", ds._fmt(ms, ".2f"),
                         ds._fmt(c.get("xla_peak_mb"), ",.0f"), ds._fmt(peak, ",.0f"), vs])  # fmt: skip
    return rows


def seeds_part(args: argparse.Namespace) -> list[list[str]]:
    """One process per env, so that an env cut off by its cap leaves the others' rows."""
    rows, end = [], time.perf_counter() + args.seeds_cap
    envs = args.seed_envs.split(",")
    for env in envs:
        share = 0.4 if (env == "point_mass" and len(envs) > 1) else 1.0  # Ant builds the longest
        cap = min(args.seeds_cap * share, end - time.perf_counter(), _left(args.budget - args.ant_cap))
        if cap < 20:
            rows.append(["seeds", env, "skipped: budget", "", "", "", ""])
            continue
        out = Path(tempfile.mkdtemp()) / "seeds.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "seeds_throughput.py"), "--json", str(out),
               "--reps", str(args.seed_reps), "--ks", args.ant_ks if env == "ant" else args.ks,
               "--envs", env]  # fmt: skip
        status = _run(cmd, cap)
        if not out.exists():
            rows.append(["seeds", env, status, "", "", "", ""])
            continue
        rows += [["seeds", f"{r['env']} K={r['K']}", "", f"{1e3 * r['in_one_wall_s']:.0f} per epoch",
                  f"{r['in_one_steps_per_s']:,.0f} env steps/s", f"sequential {r['sequential_steps_per_s']:,.0f}",
                  f"sequential/in-one wall {r['wall_ratio']:.2f}"] for r in json.loads(out.read_text())]  # fmt: skip
    return rows


def ant_part(args: argparse.Namespace) -> list[list[str]]:
    cap = min(args.ant_cap, _left(args.budget) - 5)
    if cap < 30:
        return [["ant", "paper preset", "skipped: budget", "", "", "", ""]]
    run_dir = Path(tempfile.mkdtemp()) / "ant"
    cmd = [sys.executable, str(ROOT / "launch" / "run.py"), "--config", "configs/presets.py:paper",
           "--env", "ant", "--topology", "single", "--total_env_steps", str(args.ant_steps),
           "--num_evals", str(args.ant_evals), "--run_dir", str(run_dir), "--noprogress",
           "--set", "checkpoint=false", *sum((["--set", s] for s in args.ant_set), [])]  # fmt: skip
    status = _run(cmd, cap)
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("wall_time")]
    if not rows:
        return [["ant", "paper preset", status, "", "", "", ""]]
    last = rows[-1]
    if len(rows) >= 2:  # steady state: between the last two evaluations (no compile inside)
        a, b = rows[-2], rows[-1]
        dt = b["wall_time"] - a["wall_time"]
        rate = f"{(b['env_steps'] - a['env_steps']) / dt:,.0f} env steps/s, {(b['updates'] - a['updates']) / dt:,.0f} SGD/s"
    else:
        rate = f"{last['env_steps_per_s']:,.0f} env steps/s (incl. compile)"
    return [["ant", f"paper preset, {last['env_steps']:,} steps", status, f"{last['wall_time']:.0f} s wall",
             rate, f"eval/time_at_goal {last.get('eval/time_at_goal', float('nan')):.1f}", ""]]  # fmt: skip


def _run(cmd: list[str], cap: float) -> str:
    """Run a part's command under a cap; its output goes to our stdout as it comes."""
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=cap, check=False)
    except subprocess.TimeoutExpired:
        return f"cut at {cap:.0f} s"
    return "ok" if proc.returncode == 0 else f"exit {proc.returncode}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="rehearsal on a CPU: small sizes, short caps")
    ap.add_argument("--budget", type=float, default=570.0, help="wall seconds for the whole script")
    ap.add_argument("--depth_budget", type=float, default=300.0, help="wall seconds for the depth part")
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64, 256, 1024])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--baseline_max_depth", type=int, default=16)
    ap.add_argument("--depth_cap", type=float, default=150.0)
    ap.add_argument("--seeds_cap", type=float, default=190.0)
    ap.add_argument("--seed_reps", type=int, default=2)
    ap.add_argument("--ks", default="1,2,4,8")
    # On an H200 each Ant K costs ~40 s to build (init, prefill and epoch compiles): 1, 4 fit the budget.
    ap.add_argument("--ant_ks", default="1,4")
    ap.add_argument("--seed_envs", default="point_mass,ant")
    ap.add_argument("--ant_cap", type=float, default=80.0)
    ap.add_argument("--ant_steps", type=int, default=1_000_000)
    ap.add_argument("--ant_evals", type=int, default=2)
    ap.add_argument("--ant_set", nargs="*", default=[], help="extra --set overrides of the Ant run")
    ap.add_argument("--json", type=Path, default=None, help="also write the table's rows here")
    if ap.parse_known_args(argv)[0].quick:
        ap.set_defaults(budget=300.0, depth_budget=150.0, depths=[4, 64], width=64, batch=64, rounds=2,
                        calls=2, baseline_max_depth=4, seed_reps=1, ks="1,2", ant_ks="1,2", seed_envs="point_mass",
                        ant_steps=40_000, ant_evals=2,
                        ant_set=["num_envs=16", "num_eval_envs=4", "batch_size=64", "critic_width=64",
                                 "actor_width=64", "min_replay_steps_per_env=62"])  # fmt: skip
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"# deepcrl on {_device()}; {os.cpu_count()} host cores; budget {args.budget:.0f} s", flush=True)
    rows = depth_part(args)
    rows += seeds_part(args)
    rows += ant_part(args)
    header = ["part", "what", "compile s / status", "ms per update / time", "XLA peak MiB / rate",
              "device peak MiB / other", "vs"]  # fmt: skip
    print(f"\n## deepcrl on {_device()} (depth: width {args.width}, batch {args.batch}; "
          f"total {time.perf_counter() - T0:.0f} s)\n")  # fmt: skip
    print(ds.table(header, rows))
    if args.json:
        args.json.write_text(json.dumps({"device": _device(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
