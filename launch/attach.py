"""The command side of ``launch/run.py --attach RUN`` / ``--detach RUN --role NAME``.

A live distributed run's driver reads requests from ``RUN/requests/`` every second and answers
each beside it (``launch/elastic.py``). This side checks that ``RUN`` holds a live distributed run,
writes the request, and waits for the answer: a learner is attached once it trains, detached once
its final evaluation and checkpoint are written. Every refusal is one line (``UsageError``, exit 2).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from deepcrl.configs.topologies import DISTRIBUTED
from deepcrl.launch.cli import UsageError
from deepcrl.launch.elastic import REQUESTS
from deepcrl.rundir.checkpoints import write_json_atomic

HEARTBEAT_S = 30.0  # a driver writes roles.json at least every 5 s; silent this long, it is gone


def check_live_run(run_dir: str) -> dict:
    """The run's ``roles.json`` if ``run_dir`` holds a distributed run whose driver is alive."""
    run = Path(run_dir)
    config_path, roles_path = run / "config.json", run / "roles.json"
    if not run.is_dir() or not config_path.is_file():
        raise UsageError(f"{run_dir} holds no run (no config.json); give the run directory of a live run")
    try:
        topology = json.loads(config_path.read_text()).get("topology")
    except (OSError, ValueError, AttributeError):
        raise UsageError(f"{config_path} does not parse; {run_dir} is not a run this command can join") from None
    if topology not in DISTRIBUTED:
        raise UsageError(
            f"{run_dir} is a {topology!r} run; learners join distributed runs only ({', '.join(DISTRIBUTED)})"
        )
    try:
        book = json.loads(roles_path.read_text())
    except (OSError, ValueError):
        raise UsageError(f"{run_dir} has no readable roles.json: its driver has not started") from None
    silent = time.time() - float(book.get("updated", 0))
    alive = silent < HEARTBEAT_S
    if alive and book.get("driver_host") == socket.gethostname():
        try:  # same machine: the driver's PID settles it
            os.kill(int(book["driver_pid"]), 0)
        except (OSError, KeyError, ValueError):
            alive = False
    if not alive:  # (a summary.json proves nothing: a run stopped with Ctrl-C and resumed has one)
        raise UsageError(
            f"no live run in {run_dir}: its driver last answered {silent:.0f} s ago (finished or stopped; "
            f"continue it with --resume --run_dir {run_dir} first)"
        )
    return book


def request(run_dir: str, body: dict, timeout_s: float) -> dict:
    """Hand ``body`` to the driver of the live run in ``run_dir``; its answer (``UsageError`` when it
    refuses, or does not answer within ``timeout_s``)."""
    check_live_run(run_dir)
    folder = Path(run_dir) / REQUESTS
    folder.mkdir(exist_ok=True)
    req_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    write_json_atomic(folder / f"{req_id}.json", body, fsync=False)
    answer_path = folder / f"{req_id}.answer.json"
    deadline = time.time() + timeout_s
    while not answer_path.is_file():
        if time.time() > deadline:
            raise UsageError(f"the driver of {run_dir} did not answer within {timeout_s:.0f} s ({answer_path})")
        time.sleep(0.5)
        if time.time() > deadline - timeout_s + 10:  # the driver may have ended meanwhile
            check_live_run(run_dir)
    answer = json.loads(answer_path.read_text())
    if not answer.get("ok"):
        raise UsageError(answer.get("error", "refused"))
    return answer


def attach(run_dir: str, depths: str, widths: str, gpus: float | None, role: str, timeout_s: float,
           warm: bool | None = None) -> str:  # fmt: skip
    """Attach learners; a line per learner saying where it joined."""
    if not depths:
        raise UsageError("--attach needs --learner_depths: the depth of each learner to add, e.g. 64,16")
    body = {"op": "attach", "learner_depths": depths, "learner_widths": widths or "", "role": role or ""}
    if gpus is not None:
        body["gpus_per_learner"] = gpus
    if warm is not None:
        body["attach_warm_start"] = warm
    answer = request(run_dir, body, timeout_s)
    return "\n".join(
        f"attached {name}: trains from table {a['table']}, its data from env step {a['joined_at_env_steps']:,}"
        for name, a in answer["learners"].items()
    )


def detach(run_dir: str, role: str, timeout_s: float) -> str:
    if not role:
        raise UsageError("--detach needs --role NAME: the learner to stop (see RUN/roles.json)")
    result = request(run_dir, {"op": "detach", "role": role}, timeout_s)["result"]
    if not isinstance(result, dict):
        return f"detached {role}: {result}"
    return (
        f"detached {role} after {result['updates']:,} updates: final success {result['eval/success']:.3f}, "
        f"time at goal {result['eval/time_at_goal_frac']:.3f} of the episode"
    )
