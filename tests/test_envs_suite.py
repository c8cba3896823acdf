"""The environment suite: shapes, goal layout, mazes, wall physics, truncation, resets, rendering.

Compiling Brax/MJX physics dominates the cost, so every env's reset and step
are jitted once per session (``compiled``) and shared by all tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl import envs
from deepcrl.envs import goal_metrics, make_env
from deepcrl.envs.point_mass import PointMass
from deepcrl.envs.wrappers import VectorEnv

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)

ROOT = Path(__file__).resolve().parents[1]
ALL_ENVS = [
    "ant",
    "ant_u4_maze",
    "ant_u5_maze",
    "ant_big_maze",
    "ant_hardest_maze",
    "humanoid",
    "humanoid_u_maze",
    "humanoid_big_maze",
    "arm_push_easy",
    "arm_push_hard",
    "arm_binpick_easy",
    "arm_binpick_hard",
    "point_mass",
    "point_mass_walls",
]
# The paper's evaluation layouts (far goals only), by training env. They share the training
# env's physics, so the shape tests above run on the training envs only.
EVAL_ENVS = {
    "ant_u4_maze": "ant_u4_maze_eval",
    "ant_u5_maze": "ant_u5_maze_eval",
    "ant_big_maze": "ant_big_maze_eval",
    "humanoid_u_maze": "humanoid_u_maze_eval",
    "humanoid_big_maze": "humanoid_big_maze_eval",
}
# Registered by envs/point_mass_maze.py (tested in tests/test_point_mass_maze.py).
POINT_MASS_MAZES = [
    f"point_mass_{m}_maze{e}"
    for m in ("u4", "u5", "big", "hardest")
    for e in ("", "_eval")
    if (m, e) != ("hardest", "_eval")
]
MAZES = {
    "ant_u4_maze": 4.0,
    "ant_u5_maze": 4.0,
    "ant_big_maze": 4.0,
    "ant_hardest_maze": 4.0,
    "humanoid_u_maze": 2.0,
    "humanoid_big_maze": 2.0,
    **{e: (4.0 if e.startswith("ant") else 2.0) for e in EVAL_ENVS.values()},
}
STATE_SIZE = {"ant": 29, "humanoid": 268, "arm": 17, "point": 2}


class Compiled:
    """Per-env jitted reset and step, built on first use and kept for the session.

    A step depends only on the physics model, so envs whose MJCF is identical
    share one compiled step.
    """

    def __init__(self):
        self._cache = {}
        self._steps = {}

    def __call__(self, name: str):
        if name not in self._cache:
            env = make_env(name)
            key = (env.model_xml(), env.backend) if hasattr(env, "model_xml") else name
            step = self._steps.setdefault(key, jax.jit(env.step))
            self._cache[name] = (env, jax.jit(env.reset), step)
        return self._cache[name]


@pytest.fixture(scope="session")
def compiled() -> Compiled:
    return Compiled()


def _family(name: str) -> str:
    return name.split("_")[0]


def _wall_boxes(env) -> list[tuple[np.ndarray, np.ndarray]]:
    """(centre xy, half-size xy) of every maze wall geom, read from the compiled MuJoCo model."""
    m = env.sys.mj_model
    boxes = []
    for g in range(m.ngeom):
        if m.geom(g).name.startswith("maze_wall_"):
            boxes.append((m.geom_pos[g][:2].copy(), m.geom_size[g][:2].copy()))
    return boxes


def _inside_any(xy: np.ndarray, boxes, margin: float = 0.0) -> np.ndarray:
    xy = np.atleast_2d(xy)
    inside = np.zeros(len(xy), bool)
    for c, h in boxes:
        inside |= np.all(np.abs(xy - c) < h + margin, axis=-1)
    return inside


# -- registry ---------------------------------------------------------------------


def test_registry_has_exactly_the_suite():
    assert envs.env_names() == sorted(ALL_ENVS + list(EVAL_ENVS.values()) + POINT_MASS_MAZES)
    with pytest.raises(ValueError, match="valid envs"):
        make_env("no_such_env")


def test_describe_envs_matches_specs():
    rows = {r["name"]: r for r in envs.describe_envs(ALL_ENVS + list(EVAL_ENVS.values()))}
    for name, row in rows.items():
        assert row["state_size"] == STATE_SIZE[_family(name)], name
        assert row["observation_size"] == row["state_size"] + len(row["goal_indices"])
        assert row["success_threshold"] < row["easy_threshold"]
    assert rows["ant"]["backend"] == "spring" and rows["humanoid"]["backend"] == "spring"
    assert (rows["humanoid"]["step_s"], rows["humanoid_u_maze"]["step_s"], rows["ant"]["step_s"]) == (
        0.03,
        0.015,
        0.05,
    )
    assert rows["arm_push_hard"]["backend"] == "mjx"
    assert rows["humanoid"]["goal_indices"] == (0, 1, 2) and rows["ant_big_maze"]["goal_indices"] == (0, 1)
    for train, ev in EVAL_ENVS.items():  # one policy and critic fit both: same observation layout
        assert {k: v for k, v in rows[ev].items() if k != "name"} == {
            k: v for k, v in rows[train].items() if k != "name"
        }, ev
    assert (
        rows["arm_binpick_easy"]["success_threshold"] == 0.1
        and rows["arm_binpick_easy"]["easy_threshold"] == 0.3
    )


@pytest.mark.parametrize(
    "name,backend,valid",
    [
        ("ant_u4_maze", "warp", "spring"),
        ("humanoid", "nope", "mjx"),
        ("arm_push_easy", "spring", "mjx"),
        ("point_mass", "mjx", "jax"),
    ],
)
def test_unknown_backend_names_the_valid_ones(name, backend, valid):
    with pytest.raises(ValueError, match=valid):
        make_env(name, backend=backend)


# -- every env: shapes and goal layout ---------------------------------------------


def _goal_part_from_physics(env, name: str, ps) -> np.ndarray:
    """The physical quantity the goal indices must select, read from the physics state."""
    fam = _family(name)
    if fam == "point":
        return np.asarray(ps)
    torso = np.asarray(ps.x.pos[0])  # the torso is link 0
    return torso[: len(env.spec.goal_indices)]


# The arm tasks' layout is tested in tests/test_arm.py, on its own two compiled MJX models.
@pytest.mark.parametrize("name", [n for n in ALL_ENVS if _family(n) != "arm"])
def test_reset_step_shapes_and_goal_indices(name, compiled):
    env, reset, step = compiled(name)
    spec = env.spec
    state = reset(jax.random.PRNGKey(1))
    assert state.obs.shape == (spec.observation_size,)
    assert spec.state_size == STATE_SIZE[_family(name)]
    action = jax.random.uniform(jax.random.PRNGKey(2), (env.action_size,), minval=-1, maxval=1)
    nxt = step(state, action)
    assert nxt.obs.shape == (spec.observation_size,)
    assert bool(jnp.isfinite(nxt.obs).all())
    np.testing.assert_allclose(nxt.obs[spec.state_size :], state.obs[spec.state_size :])  # goal fixed
    for s in (state, nxt):
        np.testing.assert_allclose(
            np.asarray(spec.goal_of(s.obs[: spec.state_size])),
            _goal_part_from_physics(env, name, s.pipeline_state),
            atol=1e-5,
        )
    assert set(nxt.metrics) >= {"success", "success_easy", "distance"}
    np.testing.assert_allclose(nxt.metrics["distance"], goal_metrics(spec, nxt.obs)["distance"])


@pytest.mark.parametrize("name", ALL_ENVS)
def test_success_true_at_goal_false_elsewhere(name):
    spec = make_env(name).spec
    state = np.random.default_rng(0).normal(size=spec.state_size).astype(np.float32)
    goal = state[list(spec.goal_indices)]
    at = goal_metrics(spec, jnp.concatenate([state, goal]))
    near = goal_metrics(
        spec, jnp.concatenate([state, goal + 0.9 * spec.success_threshold / np.sqrt(goal.size)])
    )
    mid = goal_metrics(spec, jnp.concatenate([state, goal + 1.5 * spec.success_threshold]))
    far = goal_metrics(spec, jnp.concatenate([state, goal + 2.0 * spec.easy_threshold]))
    assert float(at["success"]) == 1.0 and float(near["success"]) == 1.0
    assert float(mid["success"]) == 0.0
    assert float(far["success"]) == 0.0 and float(far["success_easy"]) == 0.0


# -- mazes ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MAZES))
def test_maze_goals_in_goal_cells_never_in_walls(name):
    env = make_env(name, goal_jitter=0.3 * MAZES[name])
    maze = env.maze
    assert maze.cell_size == MAZES[name]
    boxes = _wall_boxes(env)
    wall_area = sum(4 * h[0] * h[1] for _, h in boxes)
    assert np.isclose(
        wall_area, (maze.grid == "1").sum() * maze.cell_size**2
    )  # merged walls cover every wall cell
    goals = np.asarray(jax.vmap(maze.sample_goal)(jax.random.split(jax.random.PRNGKey(0), 4000)))
    assert not _inside_any(goals, boxes).any()
    # Each goal lies within the jitter of some G cell's centre, and every G cell is used.
    d = np.abs(goals[:, None, :] - maze.goal_centers[None]).max(-1)
    assert (d.min(1) <= maze.goal_jitter + 1e-5).all()
    assert len(np.unique(d.argmin(1))) == len(maze.goal_centers)
    # The start is the R cell's centre, free, with free space around the robot.
    assert not _inside_any(maze.start_xy, boxes, margin=0.49 * maze.cell_size).any()


@pytest.mark.parametrize("name", list(MAZES))
def test_maze_frame_row_is_x_column_is_y(name):
    """Cell (i, j) is centred at (cell·i, cell·j): a wall in the built MuJoCo model exactly where the grid has one."""
    env = make_env(name)
    maze, c = env.maze, env.maze.cell_size
    boxes = _wall_boxes(env)
    rows, cols = maze.grid.shape
    for i in range(rows):
        for j in range(cols):
            centre = np.array([c * i, c * j])
            assert _inside_any(centre, boxes).any() == (maze.grid[i, j] == "1"), (name, i, j)
    ((i_r, j_r),) = np.argwhere(maze.grid == "R")
    np.testing.assert_allclose(maze.start_xy, [c * i_r, c * j_r])


@pytest.mark.parametrize("name,noise", [("ant_u4_maze", 0.1), ("humanoid_u_maze", 0.0)])
def test_maze_reset_at_r_cell_centre_goal_at_goal_cell_centre(name, noise, compiled):
    env, reset, _ = compiled(name)
    ((i_r, j_r),) = np.argwhere(env.maze.grid == "R")
    r_centre = env.maze.cell_size * np.array([i_r, j_r], np.float32)
    starts = []
    for seed in range(3):
        s = reset(jax.random.PRNGKey(seed))
        goal_xy = np.asarray(s.info["goal"][:2])
        assert np.abs(env.maze.goal_centers - goal_xy).max(-1).min() < 1e-5
        starts.append(np.asarray(s.pipeline_state.x.pos[0, :2]))
    offsets = np.abs(np.stack(starts) - r_centre)
    assert offsets.max() <= noise + 1e-5  # the reference's start noise: ±0.1 (ant), none (humanoid)
    if noise:
        assert offsets.max() > 0.01  # the noise is there


def _shove(env, axis: int, speed: float):
    """A jitted override of the torso's velocity: a strong, steady shove along one axis."""

    def shove(ps):
        qd = ps.qd.at[:2].set(0.0).at[axis].set(speed)
        return env.pipeline_init(ps.q, qd)

    return jax.jit(shove)


@pytest.fixture(scope="session")
def pushed(compiled):
    """Torso positions of an env shoved every step; reuses the compiled step (``done`` is only reported)."""

    def run(name: str, axis: int, speed: float = -4.0, steps: int = 40) -> np.ndarray:
        env, reset, step = compiled(name)
        shove = _shove(env, axis, speed)
        s = reset(jax.random.PRNGKey(0))
        pos = []
        for _ in range(steps):
            s = step(s.replace(pipeline_state=shove(s.pipeline_state)), jnp.zeros(env.action_size))
            pos.append(np.asarray(s.pipeline_state.x.pos[0]))
        return np.stack(pos)

    return run


def test_ant_pushed_at_a_maze_wall_does_not_pass_through(pushed):
    # ant_u4_maze starts at the R cell (2, 1), centre (8, 4); its neighbour (2, 0) is a wall whose face is y = 2.
    free = pushed("ant", axis=1)[:, 1]
    assert free.min() < -4.0  # the same shove carries an ant far without walls
    walled = pushed("ant_u4_maze", axis=1)[:, 1]
    torso_radius = 0.25
    assert walled.min() > 2.0 + torso_radius - 0.05  # stopped at the wall face
    assert walled[-1] < 3.0  # and it did travel up to the wall


def test_humanoid_thrown_head_first_at_a_maze_wall_stops_at_its_face(compiled):
    """Lying at mid-wall height, head towards the wall: only upper-body contacts can stop it.

    With walls touching the legs only (the former model) the torso ended at x = 0.59, 0.4 m inside the wall.
    """
    env, reset, step = compiled("humanoid_u_maze")  # start (2, 2); the wall row 0 has its face at x = 1
    lying = jnp.array([0.70710678, 0.0, -0.70710678, 0.0])  # head towards -x

    @jax.jit
    def throw(ps, velocity):
        q = ps.q.at[0].set(1.8).at[2].set(0.6).at[3:7].set(lying)
        return env.pipeline_init(q, ps.qd.at[0:2].set(velocity))

    def torso_path(velocity) -> np.ndarray:
        s = reset(jax.random.PRNGKey(0))
        s = s.replace(pipeline_state=throw(s.pipeline_state, jnp.asarray(velocity, jnp.float32)))
        torso = []
        for _ in range(40):  # 0.6 s; ``done`` (fallen) is only reported
            s = step(s, jnp.zeros(env.action_size))
            torso.append(np.asarray(s.pipeline_state.x.pos[0]))
        return np.stack(torso)

    free = torso_path([0.0, 3.0])  # sideways, along the free cells
    assert free[-1, 1] - 2.0 > 0.5  # the throw carries it
    walled = torso_path([-3.0, 0.0])
    assert walled[:, 0].min() > 1.1  # head (0.19 + 0.09 m ahead of the torso) stopped at the face
    assert walled[-1, 2] > 0.0 and free[-1, 2] > 0.0  # and it lies on the floor, not under it


# -- episode boundaries ------------------------------------------------------------


def test_vector_env_truncates_at_episode_length():
    venv = VectorEnv(make_env("point_mass_walls"), num_envs=4, episode_length=7)
    state = venv.reset(jax.random.PRNGKey(0))
    step = jax.jit(venv.step)
    dones = []
    for _ in range(21):
        state = step(state, jnp.zeros((4, 2)))
        dones.append(np.asarray(state.done))
    dones = np.stack(dones)
    assert (dones[[6, 13, 20]] == 1).all() and dones.sum() == 3 * 4
    np.testing.assert_array_equal(state.info["episode_id"], 3)


def test_vector_env_resets_on_early_termination():
    class StopsRight(PointMass):
        def _terminated(self, pos):
            return pos[0] > 0.5

    venv = VectorEnv(StopsRight(), num_envs=2, episode_length=1000)
    state = venv.reset(jax.random.PRNGKey(0))
    state = state.replace(pipeline_state=jnp.array([[0.0, 0.0], [-0.9, 0.0]]))
    step = jax.jit(venv.step)
    for _ in range(6):  # both move right 0.1 per step; env 0 crosses x = 0.5 on step 6
        state = step(state, jnp.array([[1.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_array_equal(np.asarray(state.done), [1.0, 0.0])
    np.testing.assert_array_equal(np.asarray(state.info["episode_id"]), [1, 0])


def test_fallen_humanoid_terminates_and_goal_marker_holds(compiled):
    env, reset, step = compiled("humanoid")
    s = reset(jax.random.PRNGKey(3))
    goal = np.asarray(s.info["goal"])
    assert 1.0 <= np.linalg.norm(goal[:2]) <= 5.0 and goal[2] == pytest.approx(1.25)
    done_at = None
    for t in range(150):
        s = step(s, jnp.full(env.action_size, 1.0))
        if float(s.done) == 1.0:
            done_at = t
            break
    assert done_at is not None, "a humanoid driven with full torques should fall"
    assert float(s.pipeline_state.x.pos[0, 2]) < 1.0
    np.testing.assert_allclose(
        np.asarray(s.pipeline_state.q[24:26]), goal[:2], atol=1e-4
    )  # the paper's target joints
    # Every body part touches the floor (with Brax's feet-only contacts a fallen torso sinks through it).
    lowest = []
    for _ in range(60):
        s = step(s, jnp.zeros(env.action_size))
        lowest.append(float(s.pipeline_state.x.pos[:, 2].min()))
    assert min(lowest) > 0.0, min(lowest)


@pytest.mark.parametrize("name,dt", [("humanoid", 0.03), ("humanoid_u_maze", 0.015)])
def test_humanoid_env_step_advances_physics_time(name, dt, compiled):
    """Measured: the goal marker slides freely, so at 1 m/s one env step moves it ``dt`` metres."""
    env, reset, step = compiled(name)
    s = reset(jax.random.PRNGKey(0))
    slide = jax.jit(lambda ps: env.pipeline_init(ps.q, ps.qd.at[23].set(1.0)))  # target_x's velocity
    s = s.replace(pipeline_state=slide(s.pipeline_state))
    x0 = float(s.pipeline_state.q[24])
    s = step(s, jnp.zeros(env.action_size))
    assert float(s.pipeline_state.q[24]) - x0 == pytest.approx(dt, rel=0.02)
    assert env.dt == pytest.approx(dt)


def test_humanoid_reset_without_noise_is_deterministic(compiled):
    env, reset, _ = compiled("humanoid")
    a, b = reset(jax.random.PRNGKey(0)), reset(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a.pipeline_state.q[:24], b.pipeline_state.q[:24])
    np.testing.assert_array_equal(a.pipeline_state.qd[:23], b.pipeline_state.qd[:23])
    np.testing.assert_array_equal(a.pipeline_state.q[:24], env.sys.init_q[:24])
    assert not np.allclose(a.info["goal"], b.info["goal"])  # only the goal is random


# -- rendering --------------------------------------------------------------------


def _render_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / "render.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


@pytest.mark.parametrize("name,episodes,steps", [("point_mass_walls", 2, 6), ("ant_u4_maze", 1, 4)])
def test_render_writes_video_with_expected_frames(tmp_path, name, episodes, steps):
    from PIL import Image

    out = tmp_path / f"{name}.gif"
    proc = _render_cli(
        "--env",
        name,
        "--out",
        str(out),
        "--episodes",
        str(episodes),
        "--steps",
        str(steps),
        "--width",
        "96",
        "--height",
        "64",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = episodes * (steps + 1)  # the reset frame plus one per step
    assert f"({expected} frames, 96x64)" in proc.stdout
    with Image.open(out) as im:
        assert im.size == (96, 64)
        # Pillow merges identical consecutive frames into one longer frame, so
        # count frames by playing time: 50 ms each at the default 20 fps.
        frames, total_ms = [], 0
        for k in range(im.n_frames):
            im.seek(k)
            total_ms += im.info["duration"]
            frames.append(np.asarray(im.convert("RGB")))
    assert total_ms == expected * 50
    assert np.ptp(np.stack(frames)) > 0  # not blank
    with Image.open(out.with_name(f"{name}_topdown.png")) as png:
        assert png.size[0] > 100


def test_render_unknown_env_exits_2():
    proc = _render_cli("--env", "no_such_env")
    assert proc.returncode == 2
    assert "unknown env" in proc.stderr
