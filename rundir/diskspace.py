"""A full disk, recognised in whatever form it reaches us: ``OSError`` ENOSPC/EDQUOT from Python, or
the ``RESOURCE_EXHAUSTED`` / "No space left on device" text of TensorStore (Orbax), TensorFlow (Reverb)
and Ray's wrapping of a role's error. A run stops on it instead of restarting into the same full disk.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

_TEXT = re.compile(r"No space left on device|Disk quota exceeded|RESOURCE_EXHAUSTED: Error writing", re.I)
_PATH = re.compile(r"""(/[^\s"'`,:]+)""")


class DiskFull(RuntimeError):
    """The run stopped because its disk is full; the message (one line) says where and how much is free."""


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__


def full_disk_path(e: BaseException) -> str | None:
    """The path a full-disk error was writing (or "" when it names none), or None: not a full disk."""
    full, paths = False, []
    for link in _chain(e):
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT):
            full = True
            paths += [str(link.filename)] if link.filename else []
        text = str(link)
        hit = _TEXT.search(text)
        if hit:
            full = True
            path = _PATH.search(text[hit.start():]) or _PATH.search(text)
            paths += [path.group(1)] if path else []
    return (_readable(paths[0]) if paths else "") if full else None


def _readable(path: str) -> str:
    """A path as a user knows it: without JSON escapes, and a hidden temporary folder (a checkpoint
    being written) named by the folder it was being written in."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    hidden = next((i for i, p in enumerate(parts) if i and p.startswith(".")), None)
    return "/".join(parts[:hidden] if hidden else parts) or "/"


def describe_full_disk(path: str, run_dir: Path, who: str = "") -> str:
    """One line: where it failed, how much is free there, and that ``--resume`` continues once freed."""
    where = Path(path) if path else Path(run_dir)
    probe = where
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
        free_text = f"{free / 2**20:.1f} MiB free"
    except OSError:
        free_text = "free space unknown"
    by = f" ({who})" if who else ""
    return (
        f"the disk is full: writing {where}{by} failed, {free_text} on its file system; every complete "
        f"checkpoint is kept, free space and continue with --resume --run_dir {run_dir}"
    )
