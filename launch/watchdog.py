"""The liveness watchdog of the distributed driver: poll every role's progress, replace the silent ones.

A role can hang without dying (SIGSTOP, a wedged GPU driver, a dead NFS mount, a deadlock). The
driver polls every role's ``progress()`` (``rundir/liveness.py``): a role silent past its limit —
``role_start_timeout_s`` from its (re)creation until its loop first beats, then
``role_stall_timeout_s`` or the adaptive limit — is killed for certain (SIGKILL of its PID on its
node, then ``ray.kill``) and replaced by the same rules as a dead role (``Supervisor._died``).

``Watchdog`` is the part of ``launch/supervise.Supervisor`` that does this; it uses the supervisor's
handles, refs and ``roles.json`` book, and its ``_died``/``_kill``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from deepcrl.launch import ray_roles
from deepcrl.rundir.liveness import process_cpu_s, stall_limit_s


class RoleExited(RuntimeError):
    """A starting role's process is gone (seen by the watchdog before Ray reports it)."""


class RoleStalled(RuntimeError):
    """A role made no progress for longer than its limit (it was killed; the message says how long)."""


def root_cause(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e.__cause__ or e
    text = [line for line in str(cause).strip().splitlines() if line.strip()]
    last = text[-1].strip() if text else ""
    last = last.split(" Some common causes")[0]  # Ray's advice after the facts
    # Ray's death notes run on for lines of advice; the first sentences say what happened.
    return f"{type(cause).__name__}: {last if len(last) <= 240 else last[:240] + '...'}"



class Watchdog:
    """Liveness polling and replacement; mixed into ``Supervisor`` (see the module docstring)."""

    def _poll(self) -> None:
        """Collect answers to whoami()/progress() without waiting; ask again every poll period."""
        ray, now, changed = self.ray, time.monotonic(), False
        for refs, on_answer in ((self.where_refs, self._located), (self.progress_refs, self._progressed),
                                (self.ping_refs, self._pinged)):  # fmt: skip
            if refs:
                done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
                for ref in done:
                    name = refs.pop(ref)
                    try:
                        answer = ray.get(ref)
                    except Exception:  # it died: its run() or start() ref says so
                        continue
                    on_answer(name, answer, now)
                    changed = True
        if self.poll_every_s > 0 and now >= self._next_poll:
            asked = set(self.progress_refs.values())
            for name in set(self.running.values()) - asked:
                self.progress_refs[self.handles[name].progress.remote()] = name
            # A starting role has no loop to report on yet, but its process answers whoami() while it
            # builds and compiles (another thread): one that stops answering is frozen, not slow.
            for name in set(self.starting.values()) - set(self.ping_refs.values()):
                self.ping_refs[self.handles[name].whoami.remote()] = name
            for name in set(self.starting.values()):
                self._computing(name, now)
            self._next_poll = now + self.poll_every_s
        if changed:
            self.roles.write()

    def _located(self, name: str, facts: dict, now: float) -> None:
        self.watch[name]["last_alive"] = now  # its process answers: pings count from here
        if name not in self.where:  # start()'s fuller answer wins
            self.where[name] = facts
            self.roles.update(name, write=False, pid=facts["pid"], node=facts["node"], node_id=facts["node_id"])

    def _pinged(self, name: str, facts: dict, now: float) -> None:
        self.watch[name]["last_alive"] = now

    def _computing(self, name: str, now: float) -> None:
        """A starting role on this host whose CPU time advanced is alive, answering or not (a compile
        may hold Python's lock for minutes). Roles on other nodes are judged by their answers alone."""
        facts = self.where.get(name) or {}
        if not facts.get("pid") or facts.get("node_id") not in (None, self.node_id):
            return
        cpu, w = process_cpu_s(facts["pid"]), self.watch[name]
        if cpu is not None and cpu != w.get("cpu_s"):
            w["cpu_s"], w["last_alive"] = cpu, now

    def _progressed(self, name: str, report: dict, now: float) -> None:
        w = self.watch[name]
        w["last_alive"] = max(w["last_alive"], now - report["silent_s"])
        w["longest"], w["phase"] = report["longest_pause_s"], report["phase"]
        fields = {"phase": f"waiting on {report['waiting_on']}" if report["waiting_on"] else report["phase"]}
        if report["count"] != w["count"]:
            w["count"] = report["count"]
            fields.update(progress=report["count"], last_progress=time.time())
        self.roles.update(name, write=False, **fields)

    def _check_stalls(self) -> None:
        """Replace every role silent past its limit (see the module docstring)."""
        now = time.monotonic()
        for name in sorted(set(self.running.values()) | set(self.starting.values())):
            w = self.watch[name]
            limit = stall_limit_s(self.stall_fixed_s, w["longest"])
            if name in self.starting.values() or w["phase"] == "starting":
                # On this host a starting role is alive while it answers pings or uses CPU, counted once
                # its process has answered (before, it is importing); elsewhere the start limit alone
                # judges it (a compile can hold Python's lock, and answer nothing, for minutes).
                local = (self.where.get(name) or {}).get("node_id", "?") in (None, self.node_id)
                building = name in self.starting.values()  # its start() has not returned yet
                pid = (self.where.get(name) or {}).get("pid")
                if building and local and pid and process_cpu_s(pid) is None:  # killed: a death, seen now
                    self._died(name, RoleExited(f"its process (PID {pid}) exited while starting"))
                elif building and local and now - w["last_alive"] > limit:  # neither answers nor computes
                    self._stalled(name, now - w["last_alive"], limit, "frozen while starting")
                elif now - self.created_at[name] > self.start_timeout_s:
                    self._stalled(name, now - self.created_at[name], self.start_timeout_s, "not ready")
            elif now - w["last_alive"] > limit:
                self._stalled(name, now - w["last_alive"], limit, "no progress")

    def _stalled(self, name: str, silent_s: float, limit_s: float, what: str) -> None:
        pid = (self.where.get(name) or {}).get("pid")
        self._kill_for_certain(name)
        self._died(name, RoleStalled(f"{what} for {silent_s:.0f} s (limit {limit_s:.0f} s); killed PID {pid}"))

    def _forget(self, name: str) -> None:
        """Drop every outstanding call to the role (it is being replaced)."""
        for refs in (self.running, self.starting, self.progress_refs, self.where_refs, self.ping_refs):
            for ref in [r for r, n in refs.items() if n == name]:
                del refs[ref]

    def _kill_for_certain(self, name: str) -> None:
        """SIGKILL the role's PID on its node (a stopped process ignores Ray), then ``ray.kill``."""
        facts = self.where.get(name) or {}
        pid, node_id = facts.get("pid"), facts.get("node_id")
        if pid and (node_id is None or node_id == self.node_id):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif pid:
            try:
                ray_roles.sigkill_on_node(node_id, int(pid))
            except Exception as e:
                print(f"warning: could not SIGKILL {name} (PID {pid}): {root_cause(e)}", file=sys.stderr)
        self._kill(name)

