"""What this machine offers a run: host RAM (cgroup-aware), XLA's device limit, a GPU's size.

Read by ``configs/budget.py`` before anything is allocated; nothing here starts a JAX backend
except ``accelerator_limit`` (asked for ``single`` runs only, which start one anyway).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import jax


def _read_int(path: str, key: str | None = None) -> int | None:
    """The integer a file holds (``memory.max``), or the value of ``key`` in a ``key value`` file."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    if key is not None:
        lines = (line.split() for line in text.splitlines())
        text = next((v[1] for v in lines if len(v) == 2 and v[0] == key), "")
    word = (text.split() or [""])[0]
    return int(word) if word.isdigit() else None


def host_available() -> tuple[int, str]:
    """(bytes of RAM this process may still use, where that number came from)."""
    avail, source = None, "MemAvailable"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if avail is None:
        avail, source = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages"
    for folder, limit, usage, cache in (
        ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),  # cgroup v2
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        cap, used = _read_int(f"{folder}/{limit}"), _read_int(f"{folder}/{usage}")
        if cap is None or used is None or cap >= 2**60:  # no limit set
            continue
        free = cap - used + (_read_int(f"{folder}/memory.stat", cache) or 0)  # page cache is reclaimable
        if free < avail:
            avail, source = max(free, 0), "cgroup limit minus usage"
    return avail, source


def accelerator_limit() -> int | None:
    """XLA's ``bytes_limit`` on this process's first device; None on CPU (the host's RAM is the limit)."""
    dev = jax.local_devices()[0]
    if dev.platform == "cpu":
        return None
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    return int(stats["bytes_limit"]) if "bytes_limit" in stats else None


def gpu_total() -> int | None:
    """Memory of the first GPU from ``nvidia-smi`` (no JAX backend started in this process), or None."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        return int(float(out.split()[0])) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
