"""A Ray cluster of a test's own on loopback, found and stopped by its temp dir.

Its own temp dir (short: Ray's unix sockets live there) names the cluster's processes, so whoever started
it stops exactly them and leaves any other Ray on the machine alone (``ray stop`` would not).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Ray >= 2.5x enables token authentication for `ray start`; these throwaway loopback clusters opt out, and
# the drivers that join them must say so too.
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


class LoopbackCluster:
    """``ray start`` nodes on 127.0.0.1 sharing one temp dir; ``stop()`` ends every process of them."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        self.env = {**os.environ, **ENV, **(env or {})}
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"

    def start_head(self, num_cpus: int) -> None:
        self._ray_start("--head", f"--port={self.port}", f"--num-cpus={num_cpus}", "--include-dashboard=false")

    def add_node(self, num_cpus: int) -> None:
        self._ray_start(f"--address={self.address}", f"--num-cpus={num_cpus}")

    def _ray_start(self, *args: str) -> None:
        ray_bin = str(Path(sys.executable).parent / "ray")
        common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
        res = subprocess.run([ray_bin, "start", *args, *common], capture_output=True, text=True, timeout=180, env=self.env)
        if res.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed: {res.stderr[-3000:]}")

    def pids(self) -> set[int]:
        return cluster_pids(self.temp_dir)

    def stop(self) -> tuple[bool, set[int]]:
        """(whether any of its processes were found, those still left after SIGTERM then SIGKILL)."""
        found = False
        for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 20)):  # politely first (some workers linger)
            pids = self.pids()
            found = found or bool(pids)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + grace
            while time.time() < deadline and self.pids():
                time.sleep(0.2)
        left = self.pids()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return found, left


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_pids(temp_dir: str) -> set[int]:
    """The processes of the Ray cluster whose temp dir is ``temp_dir``, and all their descendants
    (workers rename themselves ``ray::…``, so they are found as children of the raylet)."""
    parents, cluster = {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if temp_dir in cmdline:
            cluster.add(int(entry.name))
    grown = True
    while grown:
        children = {pid for pid, ppid in parents.items() if ppid in cluster} - cluster
        cluster |= children
        grown = bool(children)
    return cluster
