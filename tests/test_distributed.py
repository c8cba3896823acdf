"""Distributed topologies through a real replay server and real Ray (embedded, the session's loopback
cluster, and a two-node one)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import run_cli
from ml_collections import ConfigDict
from ray_cluster import LoopbackCluster
from test_faults import _alive

from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import resolve
from deepcrl.learner.agent import make_agent
from deepcrl.roles.collector import Collector
from deepcrl.roles.learner import Learner
from deepcrl.rundir.checkpoints import restore_train_state
from deepcrl.rundir.layout import learners as learner_files

SMALL = [
    "--env", "point_mass", "--total_env_steps", "30000", "--num_envs", "16", "--num_eval_envs", "8",
    "--batch_size", "64", "--critic_width", "32", "--actor_width", "32", "--num_evals", "3",
    "--set", "num_minibatches=4", "--set", "deep_depth=8", "--noprogress",
]  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.ray_lane
def test_collector_deep_learner_shallow_end_to_end_and_both_learners_learn(tmp_path, replay):
    """The headline topology on point_mass_walls at the default CPU settings: the counts add up through
    the real replay server (each backend's), and the collector's own learner (an actor_learner) and the
    train-only learner both learn to go around the wall (untrained they reach the goal in under 15 % of episodes)."""
    run_dir = tmp_path / "run"
    res = run_cli(
        "--topology", "collector_deep_learner_shallow", "--env", "point_mass_walls", "--set", "deep_depth=8",
        "--noprogress", "--run_dir", str(run_dir), "--replay", replay,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["replay_backend"] == replay
    per_collection = config["num_envs"] * config["unroll_length"]  # env steps of one collection step
    prefill = config["min_replay_steps_per_env"] // config["unroll_length"] * per_collection
    summary = json.loads((run_dir / "summary.json").read_text())
    learners = {r["learner"]: r for r in summary["learners"]}
    assert set(learners) == {"collector_learner", "learner1_d4"}
    collector = summary["collector"]
    # Exact counts: the collector makes the env steps `single` makes (whole epochs) and every learner
    # exactly `single`'s updates, its last row at the collector's total (issue 24: not "close").
    layout = resolve(ConfigDict(config)).layout
    assert collector["env_steps"] == layout.total_env_steps and collector["segments_written"] > 0
    for name, row in learners.items():
        assert row["updates"] > 0, name
        table = summary["replay_tables"][name]
        # The server saw exactly the segments the collector wrote, in every table ...
        assert table["num_inserts"] == collector["segments_written"]
        # ... and every learner sampled only from those (the server counts prefetched samples too).
        assert 0 < row["samples_drawn"] <= table["num_samples"]
        # Its last row says how far the collector's data had reached: a learner that reached its updates
        # ahead of the collector (within the limiter's slack) ends before the last segments land.
        assert 0 < row["collector_env_steps"] <= collector["steps_written"]
        rows = _rows(run_dir / name / "metrics.jsonl")
        last = rows[-1]
        # A learner's row sits at the env steps `single` collects for as many updates: one collection
        # step per num_minibatches updates, after the prefill; so no two rows share an env step.
        nm = config["num_minibatches"]
        assert [r["env_steps"] for r in rows] == [prefill + r["updates"] // nm * per_collection for r in rows]
        steps = [r["env_steps"] for r in rows]
        assert steps == sorted(set(steps)), f"{name}: two rows at one env step {steps}"
        assert last["updates"] == row["updates"]
        # Every learner made exactly the updates `single` makes for these env steps: it did not stop
        # when the collector did (its share of the last segments unused), nor use the limiter's slack.
        assert row["updates"] == layout.collections * nm, (name, row["updates"], layout)
        assert last["env_steps"] == row["env_steps"] == collector["env_steps"], (name, last)
        assert (run_dir / name / "checkpoints" / "final").is_dir()
        # It learned: 64 eval envs, three evaluations averaging 0.3 are out of reach of a policy at the
        # untrained level.
        assert rows[0]["updates"] == 0 and rows[0]["eval/success"] < 0.15, (name, rows[0])
        assert sum(r["eval/success"] for r in rows[-3:]) / 3 >= 0.3, (name, [r["eval/success"] for r in rows])
    assert (
        _rows(run_dir / "collector" / "metrics.jsonl")[-1]["segments_written"]
        == collector["segments_written"]
    )
    assert (run_dir / "success.png").stat().st_size > 1000
    assert "| collector_learner | 8 |" in (run_dir / "summary.md").read_text()
    # One layout (rundir/layout.py): each learner's row names its folder, as single's does.
    found = learner_files(run_dir)
    assert [(f.name, f.folder, f.depth) for f in found] == [
        (r["learner"], run_dir / r["learner"], int(r["depth"])) for r in summary["learners"]]  # fmt: skip
    # The console: what runs on its first line, the final figure named by its learner on its last;
    # Reverb's own notes (start-up, every checkpoint) go to RUN/replay.log instead.
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("collector_deep_learner_shallow on point_mass_walls: a collector"), lines[0]
    assert lines[-1].startswith("final eval of collector_learner (depth 8, the collector's learner)"), lines[-1]
    if config["replay_backend"] == "reverb":
        assert "Stored checkpoint" not in res.stdout + res.stderr
        assert "Stored checkpoint" in (run_dir / "replay.log").read_text()


@pytest.mark.ray_lane
def test_topology_on_an_existing_two_node_cluster(tmp_path, replay):
    """``--ray_address`` of a cluster of two Ray nodes on loopback (a head with 1 CPU, a second node with
    2): the run's three roles cannot all fit on one node, so the replay serves roles on the other node,
    through that node's own object store, and the run ends with every learner trained. Each node's CPU
    is split into 2 XLA devices, and the learner spreads its update over both (issue 26)."""
    cluster = LoopbackCluster({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_node(num_cpus=2)
        run_dir = tmp_path / "run"
        res = run_cli("--topology", "actor_learner", *SMALL, "--run_dir", str(run_dir), "--ray_address",
                      cluster.address, "--replay", replay, "--set", "devices_per_learner=2", env=cluster.env)  # fmt: skip
        assert res.returncode == 0, res.stderr[-4000:]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert [r["learner"] for r in summary["learners"]] == ["collector_learner"]
        assert summary["learners"][0]["updates"] > 0 and summary["collector"]["segments_written"] > 0
        assert {r["devices"] for r in _rows(run_dir / "collector_learner" / "metrics.jsonl")} == {2}
        # The roles ran on that cluster, not on an embedded one: its temp dir holds every role's logs ...
        logs = "\n".join(p.name for p in Path(cluster.temp_dir).glob("session_*/logs/worker-*"))
        for name, role in summary["roles"].items():
            assert f"-{role['pid']}.out" in logs or f"-{role['pid']}.err" in logs, (name, role["pid"], logs)
        # ... on both of its nodes, the replay apart from at least one of the roles it serves.
        roles = json.loads((run_dir / "roles.json").read_text())["roles"]
        nodes = {name: role["node_id"] for name, role in roles.items()}
        assert len(set(nodes.values())) == 2, nodes
        assert any(nodes[n] != nodes["replay"] for n in ("collector", "collector_learner")), nodes
    finally:
        stopped, left = cluster.stop()
    assert stopped and not left, f"the test's cluster was not stopped: found {stopped}, left {left}"


@pytest.fixture(scope="module")
def small_config():
    c = get_config()
    c.update(
        topology="actor_learner", env="point_mass", num_envs=8, num_eval_envs=4, batch_size=32,
        num_minibatches=2, critic_width=16, actor_width=16, total_env_steps=12000, num_evals=2,
        min_replay_steps_per_env=100, checkpoint=False, params_fetch_every=2,
    )  # fmt: skip
    return c


def test_parameters_reach_the_collector_within_the_staleness_bound(tmp_path, small_config, replay, replay_server):
    """Collector and learner as plain objects around a real replay server (Reverb's, or the Ray store)."""
    config = ConfigDict(small_config.to_dict())
    config.replay_backend = replay
    experiment = resolve(config)
    spec = experiment.replay
    server, address = replay_server(spec)
    try:
        learner = Learner(experiment, "collector_learner", address, str(tmp_path))
        collector = Collector(experiment, address, str(tmp_path), learner.get_actor_params)
        probe = np.random.default_rng(0).uniform(-1, 1, (16, 4)).astype(np.float32)
        before = collector.policy_actions(probe)
        results = {}
        thread = threading.Thread(target=lambda: results.update(learner=learner.run(eval_every_rounds=1000)))
        thread.start()
        stats = collector.run()
        learner.stop()
        thread.join(timeout=120)
        after = collector.policy_actions(probe)
    finally:
        server.stop()
    assert results["learner"]["updates"] > 0
    # Staleness: at every fetch the collector's parameters were behind the learner by at most the
    # updates the rate limiter lets it make between two fetches: params_fetch_every collections plus
    # the limiter's slack either way (in rounds of num_minibatches updates) ...
    table, layout = spec.tables[0], experiment.layout
    per_round = experiment.segments_per_round
    slack_rounds = 2 * table.error_buffer / per_round
    bound = (config.params_fetch_every + slack_rounds + 1) * config.num_minibatches
    versions = collector.versions_seen
    lags = np.diff(versions)
    first = int(np.argmax(lags > 0))  # the learner's first parameters after its compile
    assert lags.min() >= 0 and lags[first + 1 :].max() <= bound, (bound, versions)
    # ... except the first new version, which also holds the backlog the collector built up while the
    # learner compiled: the prefill and up to the limiter's slack of segments.
    backlog_rounds = table.samples_per_insert * layout.prefill_env_steps / layout.segment_length / per_round
    assert lags[first] <= bound + backlog_rounds * config.num_minibatches, (lags[first], bound, versions)
    # ... and the versions it acts with track the learner: once the learner trains, most fetches bring
    # new parameters.
    assert len(lags[first:]) >= 3 and np.mean(lags[first:] > 0) >= 0.5, versions
    assert stats["params_distinct_versions"] == len(set(versions))
    assert stats["params_last_version"] == versions[-1] > 0
    assert not np.allclose(before, after)  # the collector now acts with the learner's parameters
    # What the learner publishes is its own copy, not a view of buffers its next (donating) update
    # may overwrite in place.
    _, published = learner.get_actor_params()
    pairs = zip(jax.tree_util.tree_leaves(published), jax.tree_util.tree_leaves(learner.train_state.actor), strict=True)
    assert not any(np.shares_memory(p, np.asarray(x)) for p, x in pairs)


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["--topology", "decoupling", "--learner_depths", "32,four"],
            "learner_depths must be a comma-separated",
        ),
        (["--topology", "decoupling", "--learner_depths", "32,6"], "positive multiple of 4"),
        (["--topology", "actor_learner", "--ray_address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
        (
            ["--topology", "actor_learner", "--ray_address", "nonsense"],
            "ray_address must look like HOST:PORT",
        ),
    ],
)
def test_bad_distributed_input_exits_2(tmp_path, args, needle):
    res = run_cli(*args, "--run_dir", str(tmp_path / "r"), timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def _start_cli(tmp_path, *extra):
    import os

    run_dir = tmp_path / "run"
    args = ["--topology", "collector_deep_learner_shallow", *SMALL, "--run_dir", str(run_dir), *extra]
    args[args.index("--total_env_steps") + 1] = "100000000"  # runs until we interrupt or break it
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "launch" / "run.py"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group, like a job in a terminal
    )  # fmt: skip
    return proc, run_dir


def _wait_for(predicate, timeout: float) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


def _learners_training(run_dir: Path) -> bool:
    paths = [run_dir / n / "metrics.jsonl" for n in ("collector_learner", "learner1_d4")]
    return all(p.exists() and len(p.read_text().splitlines()) >= 2 for p in paths)


def test_ctrl_c_stops_every_role_and_keeps_final_checkpoints(tmp_path, replay):
    import os
    import signal

    proc, run_dir = _start_cli(tmp_path, "--num_evals", "50000", "--replay", replay)
    try:
        _wait_for(lambda: _learners_training(run_dir), timeout=240)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        asked = time.time()
        out, err = proc.communicate(timeout=240)
        took = time.time() - asked
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: stopping every role" in err and f"--resume --run_dir {run_dir}" in err, err[-3000:]
    assert took < 30 and "Traceback" not in err, (took, err[-3000:])
    roles = json.loads((run_dir / "roles.json").read_text())["roles"]
    assert all(r["status"] in ("stopped", "finished") for r in roles.values()), roles
    summary = json.loads((run_dir / "summary.json").read_text())
    roles = json.loads((run_dir / "roles.json").read_text())["roles"]
    pids = {name: role["pid"] for name, role in roles.items()}
    assert all(pids.values()), pids
    _wait_for(lambda: not any(_alive(pid) for pid in pids.values()), timeout=30)  # gone with the run
    for name in ("collector_learner", "learner1_d4"):
        updates = next(r["updates"] for r in summary["learners"] if r["learner"] == name)
        assert updates > 0
        # The final checkpoint restores, at the update count the summary reports.
        config = ConfigDict(json.loads((run_dir / "config.json").read_text()))
        agent = make_agent(resolve(config).agents[name])
        state = restore_train_state(run_dir / name / "checkpoints" / "final", agent.init(jax.random.PRNGKey(1)))
        assert int(state.step) == updates, (name, int(state.step), updates)
    assert any((run_dir / "replay").iterdir())  # the replay tables were checkpointed too


def test_a_role_that_dies_beyond_max_role_restarts_ends_the_run_with_its_name(tmp_path, replay, shared_ray):
    """Fault injection: SIGKILL of the driving learner, found through roles.json, with no restart allowed."""
    import os
    import signal

    proc, run_dir = _start_cli(tmp_path, "--num_evals", "50000", "--set", "max_role_restarts=0", "--replay", replay, *shared_ray)
    latest = [run_dir / n / "checkpoints" / "latest" for n in ("collector_learner", "learner1_d4")]
    try:
        _wait_for(lambda: _learners_training(run_dir) and all(p.is_dir() for p in latest), timeout=240)
        roles = json.loads((run_dir / "roles.json").read_text())["roles"]
        os.kill(roles["collector_learner"]["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: role")]
    assert lines and lines[0].startswith("error: role collector_learner died 1 times"), err[-3000:]
    assert "max_role_restarts=0" in lines[0] and "last error:" in lines[0]
    # What the learners wrote before the failure is kept: metrics and their periodic checkpoints.
    for name in ("collector_learner", "learner1_d4"):
        assert (run_dir / name / "metrics.jsonl").stat().st_size > 0
    assert all(p.is_dir() and any(p.iterdir()) for p in latest)


def test_a_restarted_learner_and_collector_restore_their_state_bitwise(tmp_path, small_config, replay, replay_server):
    """What a role restarted after a crash holds equals what it saved: parameters, Adam moments, step,
    RNG key and counters, bit for bit (plain objects around a real replay server)."""
    config, name = ConfigDict(small_config.to_dict()), "collector_learner"
    config.checkpoint, config.replay_backend = True, replay
    experiment = resolve(config)
    server, address = replay_server(experiment.replay)
    try:
        learner = Learner(experiment, name, address, str(tmp_path))
        collector = Collector(experiment, address, str(tmp_path), learner.get_actor_params)
        thread = threading.Thread(target=lambda: learner.run(eval_every_rounds=3))
        thread.start()
        collector.run()
        learner.stop()
        thread.join(timeout=120)
        assert int(learner.train_state.step) > 0
        again = Learner(experiment, name, address, str(tmp_path), resume=True)
        collector_again = Collector(experiment, address, str(tmp_path), learner.get_actor_params, resume=True)
    finally:
        server.stop()
    assert not thread.is_alive()
    saved = jax.tree_util.tree_leaves_with_path(learner.train_state)
    restored = jax.tree_util.tree_leaves(again.train_state)
    assert len(saved) == len(restored) > 10
    for (path, a), b in zip(saved, restored, strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(np.asarray(learner.key), np.asarray(again.key))
    assert (again.rounds, again.rows_written) == (learner.rounds, learner.rows_written)
    assert collector_again.env_steps == collector.env_steps >= config.total_env_steps
    assert collector_again.segments_written == collector.segments_written
    np.testing.assert_array_equal(np.asarray(collector_again.key), np.asarray(collector.key))
