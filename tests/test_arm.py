"""Arm tasks as the paper ran them: the arm model, action mapping, regions, bins and physics.

MJX compiles slowly on CPU, so the physics runs on two compiled models per
session (``compiled``: arm_push_easy, whose model arm_push_hard shares, and
arm_binpick_hard); the other tasks' differences (regions, bins, impratio) are
checked on their MuJoCo models and on the pure start/goal sampler.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from deepcrl.envs import make_env
from deepcrl.envs.arm import (
    TASKS,
    Arm,
    commanded_targets,
    sample_cube_and_goal,
)

# The reference's numbers (PAPER-FIDELITY.md, "Arm tasks"): start centre, goal centre, ± range.
REGIONS = {
    "arm_push_easy": ((-0.1, 0.6), (0.1, 0.6), 0.1),
    "arm_push_hard": ((-0.25, 0.65), (0.25, 0.65), 0.25),
    "arm_binpick_easy": ((-0.15, 0.6), (0.17, 0.6), 0.09),
    "arm_binpick_hard": ((-0.3, 0.6), (0.3, 0.6), 0.15),
}
# Bins: (start-bin centre x, goal-bin centre x, inner half-width, gap between the bins' outer faces).
BINS = {"arm_binpick_easy": (-0.17, 0.17, 0.135, 0.05), "arm_binpick_hard": (-0.3, 0.3, 0.185, 0.21)}
PANDA_LINK_MASSES = (4.970684, 0.646926, 3.228604, 3.587895, 1.225946, 1.666555, 0.735522)
STATE = 17


class Compiled:
    """Per-model jitted reset and step, built on first use and kept for the session."""

    def __init__(self):
        self._cache: dict[str, tuple[Arm, object, object]] = {}

    def __call__(self, name: str):
        if name not in self._cache:
            env = make_env(name)
            self._cache[name] = (env, jax.jit(env.reset), jax.jit(env.step))
        return self._cache[name]


@pytest.fixture(scope="session")
def compiled() -> Compiled:
    return Compiled()


def _link7_origin(env: Arm, q: np.ndarray) -> np.ndarray:
    """World position of link 7's origin for joint positions q, by MuJoCo's own kinematics."""
    m = env.sys.mj_model
    d = mujoco.MjData(m)
    d.qpos[:] = q
    mujoco.mj_kinematics(m, d)
    return d.xpos[m.body("link7").id].copy()


def _fingers(env: Arm, state) -> np.ndarray:
    return np.asarray(state.pipeline_state.q[env._finger_qadr])


# -- pure mapping and model -----------------------------------------------------------


def test_action_mapping_spans_the_reference_ranges_with_joint7_held():
    lo = np.asarray(commanded_targets(-jnp.ones(5)))
    hi = np.asarray(commanded_targets(jnp.ones(5)))
    # joints 1, 2, 4, 6 span their commanded ranges; 3 and 5 get 0; 7 is held at 1.4487.
    np.testing.assert_allclose(lo[[0, 1, 3, 5]], [0.35, 0.0, -3.07, 2.36], atol=0.005)
    np.testing.assert_allclose(hi[[0, 1, 3, 5]], [2.79, 1.48, -0.07, 3.75], atol=0.005)
    rand = np.asarray(
        jax.vmap(commanded_targets)(jax.random.uniform(jax.random.PRNGKey(0), (500, 5), minval=-3, maxval=3))
    )
    np.testing.assert_array_equal(rand[:, [2, 4]], 0.0)
    np.testing.assert_allclose(rand[:, 6], 1.4487, atol=1e-6)
    assert (rand[:, :7] >= lo[:7] - 1e-6).all() and (rand[:, :7] <= hi[:7] + 1e-6).all()  # clipped
    # The gripper is binary: both fingers get the same target, 0 (closed) or 0.08 (open).
    np.testing.assert_array_equal(rand[:, 7], rand[:, 8])
    np.testing.assert_allclose(np.unique(rand[:, 7]), [0.0, 0.08])
    for a, target in ((1e-3, 0.0), (0.5, 0.0), (0.0, 0.08), (-0.5, 0.08)):
        assert float(commanded_targets(jnp.array([0, 0, 0, 0, a]))[7]) == pytest.approx(target)


def test_model_has_panda_masses_no_gravcomp_and_reference_servos():
    env = make_env("arm_push_easy")
    m = env.sys.mj_model
    masses = [m.body(f"link{k}").mass[0] for k in range(1, 8)]
    np.testing.assert_allclose(
        masses, PANDA_LINK_MASSES, rtol=1e-5
    )  # the hand adds none, as in the reference
    assert not m.body_gravcomp.any()
    # What Brax loads is what the MJCF says (no joint-less bodies to fuse).
    plain = mujoco.MjModel.from_xml_string(env.model_xml())
    np.testing.assert_allclose(plain.body_mass, m.body_mass)
    np.testing.assert_allclose(plain.dof_damping, m.dof_damping)
    arm_dofs = [m.joint(f"joint{k}").dofadr[0] for k in range(1, 8)]
    finger_dofs = [m.joint(f).dofadr[0] for f in ("finger_left", "finger_right")]
    np.testing.assert_allclose(m.dof_damping[arm_dofs], 0.0)
    np.testing.assert_allclose(m.dof_armature[arm_dofs], 0.0)
    np.testing.assert_allclose(m.dof_damping[finger_dofs], 5.0)
    np.testing.assert_allclose(m.dof_armature[finger_dofs], 0.1)
    assert [bool(m.joint(f"joint{k}").limited[0]) for k in range(1, 8)] == [0, 1, 0, 1, 0, 1, 0]
    ranges = {k: tuple(m.joint(f"joint{k}").range) for k in (2, 4, 6)}
    np.testing.assert_allclose(ranges[2], (-1.7628, 1.7628))
    np.testing.assert_allclose(ranges[4], (-3.0718, -0.0698))
    np.testing.assert_allclose(ranges[6], (-0.0175, 3.7525))
    gain, stiffness = m.actuator_gainprm[:7, 0], -m.actuator_biasprm[:7, 1]
    np.testing.assert_allclose(gain, [4500, 4500, 2000, 2000, 1000, 1000, 1000])
    np.testing.assert_allclose(stiffness, [4500, 4500, 3500, 3500, 2000, 2000, 2000])
    for f, pad in (("finger_left", "left_finger"), ("finger_right", "right_finger")):
        np.testing.assert_allclose(m.joint(f).range, (0.0, 0.08))
        np.testing.assert_allclose(m.actuator(f).forcerange, (-500, 500))
        np.testing.assert_allclose(m.geom(pad).size, (0.015, 0.005, 0.04))
    assert m.geom("hand").type[0] == mujoco.mjtGeom.mjGEOM_CAPSULE
    assert m.eq_type[0] == mujoco.mjtEq.mjEQ_JOINT  # the fingers are coupled
    assert m.body("cube").mass[0] == pytest.approx(0.216)
    assert env.dt == pytest.approx(0.05) and m.opt.timestep == pytest.approx(0.002)
    assert m.opt.impratio == 1.0 and make_env("arm_binpick_easy").sys.mj_model.opt.impratio == 10.0


@pytest.mark.parametrize("name", list(REGIONS))
def test_start_and_goal_regions(name):
    start, goal_c, r = REGIONS[name]
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    cube, goal = jax.jit(jax.vmap(lambda k: sample_cube_and_goal(TASKS[name], k)))(keys)
    cube, goal = np.asarray(cube), np.asarray(goal)
    for xyz, centre, z in ((cube, start, 0.07), (goal, goal_c, 0.03)):
        off = xyz[:, :2] - np.asarray(centre)
        assert np.abs(off).max() <= r + 1e-6 and np.abs(off).max() > 0.98 * r  # fills ± r, no more
        np.testing.assert_allclose(xyz[:, 2], z)
    if name in BINS:
        xa, xb, inner, _ = BINS[name]
        assert (np.abs(cube[:, 0] - xa) < inner).all() and (np.abs(goal[:, 0] - xb) < inner).all()
        assert (np.abs(cube[:, 1] - 0.6) < inner).all() and (np.abs(goal[:, 1] - 0.6) < inner).all()


@pytest.mark.parametrize("name", list(BINS))
def test_binpick_has_two_separate_walled_bins(name):
    m = make_env(name).sys.mj_model
    walls = [m.geom(g) for g in range(m.ngeom) if m.geom(g).name.startswith("bin")]
    assert len(walls) == 8
    lo = np.array([w.pos - w.size for w in walls])
    hi = np.array([w.pos + w.size for w in walls])
    np.testing.assert_allclose(lo[:, 2], 0.0, atol=1e-9)
    np.testing.assert_allclose(hi[:, 2], 0.066)  # 6.6 cm walls
    xa, xb, inner, gap = BINS[name]
    for centre in (xa, xb):
        mine = [k for k, w in enumerate(walls) if abs(w.pos[0] - centre) < inner + 0.02]
        assert len(mine) == 4
        # The inner faces of the x walls are ±inner from the centre.
        x_walls = [k for k in mine if walls[k].size[0] < walls[k].size[1]]
        faces = sorted(abs(walls[k].pos[0] - centre) - walls[k].size[0] for k in x_walls)
        np.testing.assert_allclose(faces, [inner, inner], atol=1e-6)
    # Two separate bins: nothing between their outer faces.
    assert hi[:, 0][lo[:, 0] < 0].max() == pytest.approx(-gap / 2)
    assert lo[:, 0][hi[:, 0] > 0].min() == pytest.approx(gap / 2)
    pairs = {frozenset((m.geom(m.pair_geom1[p]).name, m.geom(m.pair_geom2[p]).name)) for p in range(m.npair)}
    for w in walls:  # the cube, hand and fingers collide with every wall
        assert {frozenset((g, w.name)) for g in ("cube", "hand", "left_finger", "right_finger")} <= pairs


# -- physics (MJX) --------------------------------------------------------------------


class Statics:
    """Where the arm comes to rest under a constant action (servos balancing gravity).

    A scripted controller for the tests: MuJoCo on the CPU finds the action whose
    resting pose puts the fingertips' midpoint (site ``pinch``) at a target, the
    hand as near vertical as the joint-6 command range allows.
    """

    def __init__(self, env: Arm):
        self.env, self.m = env, env.sys.mj_model
        self.d = mujoco.MjData(self.m)
        self.gain = self.m.actuator_gainprm[:7, 0]
        self.stiffness = -self.m.actuator_biasprm[:7, 1]
        self.dofs = np.array([self.m.joint(f"joint{k}").dofadr[0] for k in range(1, 8)])
        self.site = self.m.site("pinch").id

    def rest(self, arm_action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.asarray(commanded_targets(jnp.asarray(np.append(arm_action, -1.0), jnp.float32)))[:7]
        d, q = self.d, self.gain * u / self.stiffness
        for _ in range(30):  # gain·u − stiffness·q = gravity torque, solved by fixed point
            d.qpos[:] = 0.0
            d.qpos[0:4] = (5.0, 5.0, 1.0, 1.0)  # the cube out of the way
            d.qpos[self.env._arm_qadr] = q
            d.qvel[:] = 0.0
            mujoco.mj_forward(self.m, d)
            q_next = (self.gain * u - d.qfrc_bias[self.dofs]) / self.stiffness
            done = np.abs(q_next - q).max() < 1e-7
            q = q_next
            if done:
                break
        return d.site_xpos[self.site].copy(), d.site_xmat[self.site].reshape(3, 3)[:, 2].copy()

    def action(self, target, grip: float) -> jax.Array:
        def residual(a):
            pos, z_axis = self.rest(a)
            return np.append(pos - np.asarray(target), 0.2 * z_axis[:2])

        a = np.zeros(4)
        for _ in range(20):
            r = residual(a)
            jac = np.stack([(residual(a + e) - r) / 1e-4 for e in np.eye(4) * 1e-4], 1)
            a_next = np.clip(a - np.linalg.lstsq(jac, r, rcond=None)[0], -1, 1)
            if np.abs(a_next - a).max() < 1e-4:
                break
            a = a_next
        return jnp.asarray(np.append(a_next, grip), jnp.float32)


def _run(step, s, action, n: int):
    for _ in range(n):
        s = step(s, action)
    return s


@pytest.mark.parametrize("name", ["arm_push_easy", "arm_binpick_hard"])
def test_observation_layout_goal_and_link7_hand(name, compiled):
    env, reset, step = compiled(name)
    spec = env.spec
    assert (spec.state_size, spec.goal_indices, env.action_size) == (STATE, (0, 1, 2), 5)
    s = reset(jax.random.PRNGKey(1))
    obs, q = np.asarray(s.obs), np.asarray(s.pipeline_state.q)
    assert obs.shape == (spec.observation_size,) == (20,)
    np.testing.assert_allclose(obs[STATE:], np.asarray(s.info["goal"]))
    np.testing.assert_allclose(obs[0:3], q[0:3])  # the goal indices select the cube position
    assert obs[2] == pytest.approx(0.07) and obs[-1] == pytest.approx(0.03)
    np.testing.assert_allclose(obs[3:10], q[env._arm_qadr])
    np.testing.assert_allclose(obs[10:13], _link7_origin(env, q), atol=1e-5)  # hand = link-7 origin
    np.testing.assert_allclose(obs[13:16], 0.0, atol=1e-6)
    assert obs[16] == pytest.approx(0.08)  # finger bodies 2 × 0.04 apart
    nxt = step(s, jax.random.uniform(jax.random.PRNGKey(2), (5,), minval=-1, maxval=1))
    obs = np.asarray(nxt.obs)
    assert np.isfinite(obs).all()
    np.testing.assert_allclose(obs[STATE:], np.asarray(s.info["goal"]))  # the goal stays
    link7 = env.sys.mj_model.body("link7").id - 1
    np.testing.assert_allclose(obs[10:13], np.asarray(nxt.pipeline_state.x.pos[link7]))
    # Link poses are computed at the start of the last 2 ms substep, so they lag q slightly.
    np.testing.assert_allclose(obs[10:13], _link7_origin(env, np.asarray(nxt.pipeline_state.q)), atol=3e-3)
    assert float(nxt.metrics["distance"]) == pytest.approx(np.linalg.norm(obs[0:3] - obs[STATE:]), rel=1e-5)


def test_cube_drops_from_z007_onto_the_table_in_005s_steps(compiled):
    env, reset, step = compiled("arm_binpick_hard")
    s = reset(jax.random.PRNGKey(4))
    start = np.asarray(s.obs[0:3])
    rest = jnp.array([0.0, 0.0, 0.0, 0.0, -1.0])  # the hand rises away from the bins
    s = step(s, rest)
    assert float(s.pipeline_state.time) == pytest.approx(0.05, abs=1e-6)
    # Free fall for one env step: 0.5 g t² = 1.2 cm at t = 0.05 s.
    assert float(s.obs[2]) == pytest.approx(0.07 - 0.5 * 9.81 * 0.05**2, abs=1.5e-3)
    s = _run(step, s, rest, 11)
    assert float(s.pipeline_state.time) == pytest.approx(0.6, abs=1e-5)
    cube = np.asarray(s.obs[0:3])
    assert cube[2] == pytest.approx(0.03, abs=1e-3)  # resting on the table
    np.testing.assert_allclose(cube[:2], start[:2], atol=2e-3)
    assert np.abs(np.asarray(s.pipeline_state.qd[0:3])).max() < 0.02


def test_gripper_is_binary_and_fingers_move_together(compiled):
    env, reset, step = compiled("arm_binpick_hard")
    s = reset(jax.random.PRNGKey(5))
    # Any positive gripper action is "closed", any other "open": identical physics.
    for weak, full in ((0.2, 1.0), (-0.2, -1.0), (0.0, -1.0)):
        a, b = step(s, jnp.array([0.3, 0.1, 0.0, 0.2, weak])), step(s, jnp.array([0.3, 0.1, 0.0, 0.2, full]))
        np.testing.assert_array_equal(np.asarray(a.obs), np.asarray(b.obs))
    trace = []
    for grip in (1.0, -1.0):
        for _ in range(12):  # the overdamped finger servo settles in about 0.5 s
            s = step(s, jnp.array([0.0, 0.0, 0.0, 0.0, grip]))
            trace.append(_fingers(env, s))
        expected = 0.0 if grip > 0 else 0.08
        np.testing.assert_allclose(_fingers(env, s), expected, atol=1e-3)
        assert float(s.obs[16]) == pytest.approx(2 * expected, abs=3e-3)
    trace = np.array(trace)
    assert np.abs(trace[:, 0] - trace[:, 1]).max() < 2e-3  # coupled
    assert trace.min() > -2e-3 and trace.max() < 0.08 + 2e-3  # each travels 0-0.08


def _key_near_bin_centres(name: str, tol: float = 0.06) -> jax.Array:
    """A reset key whose cube and goal are near their bins' centres, well inside the reach."""
    task = TASKS[name]
    keys = jax.random.split(jax.random.PRNGKey(0), 512)
    cube, goal = jax.jit(jax.vmap(lambda k: sample_cube_and_goal(task, k)))(keys)
    near = (np.abs(np.asarray(cube[:, :2]) - task.start_center).max(1) < tol) & (
        np.abs(np.asarray(goal[:, :2]) - task.goal_center).max(1) < tol
    )
    return keys[int(np.argmax(near))]


def test_grasped_cube_is_lifted_carried_and_scores_in_the_goal_bin(compiled):
    env, reset, step = compiled("arm_binpick_hard")
    ik = Statics(env)
    s = reset(_key_near_bin_centres("arm_binpick_hard"))
    cube, goal = np.asarray(s.obs[0:3]), np.asarray(s.info["goal"])
    above, at = np.append(cube[:2], 0.2), np.append(cube[:2], 0.045)
    s = _run(step, s, ik.action(above, -1.0), 20)
    s = _run(step, s, ik.action(at, -1.0), 20)
    assert float(s.metrics["success"]) == 0.0
    lift = ik.action(above, 1.0)
    # Lifting with the gripper open leaves the cube on the table...
    open_lift = _run(step, _run(step, s, ik.action(at, -1.0), 10), lift.at[4].set(-1.0), 20)
    assert float(open_lift.obs[2]) < 0.035
    # ...closing it on the cube first carries the cube up with the hand.
    s = _run(step, _run(step, s, ik.action(at, 1.0), 10), lift, 20)
    pinch = s.pipeline_state.site_xpos[ik.site]
    assert float(s.obs[2]) > 0.15 and float(jnp.linalg.norm(s.obs[0:3] - pinch)) < 0.05
    for f in (0.33, 0.67, 1.0):  # over the walls into the goal bin, then let go
        s = _run(step, s, ik.action(np.append(cube[:2] + f * (goal[:2] - cube[:2]), 0.2), 1.0), 8)
    s = _run(step, s, ik.action(np.append(goal[:2], 0.07), 1.0), 15)
    s = _run(step, s, ik.action(np.append(goal[:2], 0.07), -1.0), 10)
    placed = np.asarray(s.obs[0:3])
    assert abs(placed[0] - BINS["arm_binpick_hard"][1]) < BINS["arm_binpick_hard"][2] and placed[2] < 0.035
    assert float(s.metrics["success"]) == 1.0, float(s.metrics["distance"])
