"""Progress lines (launch/progress.py): what a line shows, plain lines in logs, one line per role."""

from __future__ import annotations

import io
import json

from deepcrl.launch.progress import RoleWatcher, RunProgress, last_row, stats_text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stats_text_shows_rate_success_and_time_at_goal_when_present():
    row = {"env_steps_per_s": 1234.4, "eval/success": 0.5, "eval/time_at_goal": 17.25, "updates": 40}
    assert stats_text(row) == "1,234 steps/s  success 0.50  time at goal 17.2  updates 40"
    assert stats_text({"eval/success": 0.25}, rate=10.0) == "10 steps/s  success 0.25"  # no time_at_goal yet
    assert stats_text(None) == ""


def test_plain_lines_without_a_terminal_and_live_lines_on_one():
    log = io.StringIO()
    with RunProgress({"single": 1000}, stream=log) as bar:
        assert log.getvalue() == "[single] compiling…\n"  # until the first row: the bar cannot move yet
        bar.update("single", 500, {"eval/success": 0.75})
    lines = log.getvalue().splitlines()
    assert lines[1].startswith("[single] 500/1,000 steps (50%)") and "success 0.75" in lines[1]
    tty = _Tty()
    with RunProgress({"collector": 100, "learner_0": 100}, stream=tty) as bar:
        bar.update("learner_0", 50, {"eval/success": 0.5})
    out = tty.getvalue()
    assert "learner_0" in out and "collector" in out and "success 0.50" in out and "50/100" in out
    assert "compiling" in out  # the collector's line, which has no row yet


def test_role_watcher_reads_each_roles_last_row(tmp_path):
    for role, steps in (("collector", 300), ("learner_0", 200)):
        (tmp_path / role).mkdir()
        rows = [{"env_steps": 100, "eval/success": 0.0}, {"env_steps": steps, "eval/success": 0.5}]
        (tmp_path / role / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows) + '{"env_st'
        )
    assert (
        last_row(tmp_path / "learner_0" / "metrics.jsonl")["env_steps"] == 200
    )  # a half-written line skipped
    log = io.StringIO()
    RoleWatcher(tmp_path, ["collector", "learner_0", "learner_1"], 400, period_s=60, stream=log).close()
    lines = log.getvalue().splitlines()
    assert lines[:3] == [f"[{r}] starting, compiling…" for r in ("collector", "learner_0", "learner_1")]
    assert len(lines) == 5  # learner_1 has written nothing yet
    assert lines[3].startswith("[collector] 300/400 steps") and lines[4].startswith(
        "[learner_0] 200/400 steps"
    )


def test_a_resumed_runs_rate_counts_this_session_only():
    log = io.StringIO()
    with RunProgress({"single": 1000}, stream=log, done={"single": 900}) as bar:  # 900 done before
        bar.start -= 10.0  # this session began 10 s ago
        bar.update("single", 950, {"eval/success": 0.5})
    assert "  5 steps/s  success 0.50" in log.getvalue(), log.getvalue()  # 50 steps in 10 s, not 950
