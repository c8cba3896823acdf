"""Pieces the benchmarks share: a Reverb server in a process of its own, CPU clocks, medians,
interleaving order, a timestamped log line and the machine's description."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version


def _serve(spec, conn, stop) -> None:
    """Body of the server process: start Reverb, send the address, wait for the stop event."""
    from deepcrl.buffer.reverb_replay import start_server  # Reverb, in the spawned server process only

    server, address = start_server(spec)
    conn.send(address)
    stop.wait()
    server.stop()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """A Reverb server in a spawned process of its own, as in the distributed mode."""

    def __init__(self, spec) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_serve, args=(spec, child, self._stop), daemon=True)
        self._proc.start()
        if not parent.poll(180):
            self.close()
            raise RuntimeError("the Reverb server process did not report an address within 180 s")
        self.address = parent.recv()

    def cpu_s(self) -> float:
        return proc_cpu_s(self._proc.pid)

    def close(self) -> None:
        self._stop.set()
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(10)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, grown = set(), {pid}
    while grown:
        grown = {p for p, pp in parents.items() if pp in grown} - found
        found |= grown
    return found


class RayStore:
    """The Ray backend's store on a small Ray of this process's own, on loopback. Its CPU is that of every
    process of that Ray (the store's worker, the raylet, GCS: all of what the Ray backend costs)."""

    def __init__(self, spec) -> None:
        import ray

        from deepcrl.buffer import ray_replay

        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level="ERROR", log_to_driver=False)  # fmt: skip
        self._server, self.address = ray_replay.start_server(spec)

    def cpu_s(self) -> float:
        total = 0.0
        for pid in descendants(os.getpid()):
            try:
                total += proc_cpu_s(pid)
            except OSError:
                continue
        return total

    def close(self) -> None:
        import ray

        self._server.stop()
        ray.shutdown()


def role_pids(run_dir) -> dict[str, int]:
    """Role name -> PID of a distributed run, from its ``RUN/roles.json`` (empty while unreadable)."""
    try:
        with open(os.path.join(run_dir, "roles.json")) as f:
            roles = json.load(f)["roles"]
    except (OSError, ValueError, KeyError):
        return {}
    return {name: r["pid"] for name, r in roles.items() if r.get("pid")}


class RoleCpu:
    """CPU seconds of every role of a distributed run, read from /proc every ``tick()`` while they live
    (the last tick before a process ends is what it counts: the final ~0.2 s are missed alike by all)."""

    def __init__(self, run_dir) -> None:
        self.run_dir, self.seen = run_dir, {}  # (role, pid) -> last CPU seconds read

    def tick(self, driver_pid: int | None = None) -> None:
        pids = role_pids(self.run_dir)
        if driver_pid is not None:
            pids["driver"] = driver_pid
        for name, pid in pids.items():
            try:
                self.seen[(name, pid)] = proc_cpu_s(pid)
            except (OSError, IndexError):
                pass

    def of(self, role: str) -> float:
        """CPU seconds of ``role`` over all its processes (a restarted role has several)."""
        return sum(v for (r, _), v in self.seen.items() if r == role)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def rotated(items: list[str], i: int) -> list[str]:
    """``items`` started at its ``i``-th element: interleaved variants take turns at going first."""
    k = i % len(items)
    return items[k:] + items[:k]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def machine() -> dict:
    """CPU model, core count, date and the versions that matter for speed."""
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    versions = {}
    for pkg in ("jax", "dm-reverb", "brax"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "?"
    return {"cpu": model, "nproc": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), **versions}
