"""Where a run came from: the code (git commit, dirty or not, or the installed version), the package
versions, Python, the command line, the host and the JAX devices. Written to ``RUN/provenance.json``
beside ``config.json`` by ``single`` and the distributed driver (after a resume's checks: a refused one
writes nothing), once per session: a resume appends its own."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("jax", "jaxlib", "flax", "optax", "brax", "mujoco", "mujoco-mjx", "numpy", "ray", "dm-reverb",
            "tensorflow")  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


def code_version() -> dict:
    """The git commit of this checkout and whether its tree differs from it; else the installed version."""
    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10)  # noqa: E731
        commit = git("rev-parse", "HEAD")
        if commit.returncode == 0:
            dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
            return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty)}
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return {"version": metadata.version("deepcrl")}
    except metadata.PackageNotFoundError:
        return {"version": "unknown"}


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def gpu_visible() -> bool:
    """An NVIDIA GPU this machine has (its device files), whatever JAX was built for."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def collect(devices: list) -> dict:
    """Everything above; ``devices``: the JAX devices the run uses."""
    platforms = sorted({d.platform for d in devices})
    return {
        **code_version(),
        "python": platform.python_version(),
        "packages": versions(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "jax_devices": [str(d) for d in devices],
        "cpu_while_gpu_visible": platforms == ["cpu"] and gpu_visible(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def summary(prov: dict) -> str:
    """One console line: the code and the stack."""
    code = (f"git {prov['git_commit'][:10]}{' (dirty tree)' if prov['git_dirty'] else ''}"
            if "git_commit" in prov else f"deepcrl {prov['version']}")  # fmt: skip
    p = prov["packages"]
    stack = ", ".join(f"{n} {p[n]}" for n in ("jax", "flax", "brax", "mujoco", "ray", "dm-reverb") if n in p)
    return f"  code: {code}; python {prov['python']}, {stack}; host {prov['host']}"


def write(run_dir: Path, prov: dict) -> None:
    """Append this session's record to ``RUN/provenance.json`` (a list: the first run, then each resume)."""
    path = Path(run_dir) / "provenance.json"
    try:
        sessions = json.loads(path.read_text()) if path.exists() else []
    except ValueError:
        sessions = []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps([*sessions, prov], indent=2) + "\n")
    tmp.replace(path)
