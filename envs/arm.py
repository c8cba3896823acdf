"""Goal-conditioned manipulation with a Franka-Panda-like arm on MJX, as the paper ran it.

Four tasks share one arm (``envs/assets/arm.xml``) and differ in where the
cube starts, where its goal is drawn and, for binpick, two walled bins:

- ``arm_push_easy`` / ``arm_push_hard``: push the cube across the table from a
  start region to a goal region (±0.1 m / ±0.25 m around their centres).
- ``arm_binpick_easy`` / ``arm_binpick_hard``: lift the cube out of one bin
  and place it in the other; the 6.6 cm walls stop it being pushed across.

Every number below (regions, bins, start pose, action mapping, step) is the
one of the paper's code (wang-kevin3290/scaling-crl, envs/manipulation/*.py and
envs/assets/panda_*.xml); ``envs/README.md`` lists them with the differences.

State (17-d): cube position (3) ⊕ the 7 arm joint angles ⊕ the link-7 origin's
position (3) and linear velocity (3) (the hand is fused into link 7) ⊕ the
distance between the two finger bodies (1). Goal = cube position =
``state[0:3]``. No early termination.

Action (5-d, [-1, 1]): absolute targets for joints 1, 2, 4, 6 spanning
``ACTION_LO..ACTION_HI``; joints 3 and 5 are commanded 0 and joint 7 1.4487
(fixed roll). The gripper is binary: action > 0 closes both fingers (target
0), otherwise they open (target 0.08 each).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import PipelineEnv
from brax.io import mjcf
from etils import epath

from deepcrl.envs.base import GoalEnv, GoalSpec

# Brax's own backends accept only Euler integration, while the arm's stiff
# servos need MuJoCo's implicitfast integrator: MJX alone runs it.
ARM_BACKENDS = ("mjx",)
ASSET = epath.Path(__file__).parent / "assets" / "arm.xml"

# Reset pose of the 7 arm joints and of each finger, as the reference.
ARM_Q0 = np.array([1.571, 0.742, 0.0, -1.571, 0.0, 3.054, 1.449], np.float32)
FINGER_Q0 = 0.04
# Commanded joint angles for actions -1 and +1 (before the servos' gain/stiffness
# ratio): joints 3, 5 and 7 get one fixed command each.
ACTION_LO = np.array([0.3491, 0.0, 0.0, -3.0718, 0.0, 2.3562, 1.4487], np.float32)
ACTION_HI = np.array([2.7925, 1.48353, 0.0, -0.0698, 0.0, 3.7525, 1.4487], np.float32)
ACTUATED_JOINTS = (0, 1, 3, 5)  # joints 1, 2, 4, 6 (0-based)
FINGER_OPEN, FINGER_CLOSED = 0.08, 0.0
CUBE_HALF = 0.03
CUBE_Z0 = 0.07  # the cube is dropped onto the table at reset
GOAL_Z = CUBE_HALF  # the goal is the cube resting on the table
SUBSTEPS = 25  # × 2 ms = 0.05 s per env step
BINPICK_IMPRATIO = 10.0
HARD_THRESHOLD = 0.03  # the paper's "hard" success radius; not a reported metric


@dataclasses.dataclass(frozen=True)
class ArmTask:
    """Scene and sampling regions of one arm task (positions in metres)."""

    name: str
    start_center: tuple[float, float]
    goal_center: tuple[float, float]
    half_range: float  # cube start and goal are uniform in ±half_range (x, y) around their centres
    bin_centers: tuple[tuple[float, float], tuple[float, float]] | None = None  # start bin, goal bin
    bin_inner_half: float = 0.0  # a bin's inner half-width

    @property
    def bins(self) -> bool:
        return self.bin_centers is not None


TASKS = {
    "arm_push_easy": ArmTask("arm_push_easy", (-0.1, 0.6), (0.1, 0.6), 0.1),
    "arm_push_hard": ArmTask("arm_push_hard", (-0.25, 0.65), (0.25, 0.65), 0.25),
    "arm_binpick_easy": ArmTask(
        "arm_binpick_easy", (-0.15, 0.6), (0.17, 0.6), 0.09, ((-0.17, 0.6), (0.17, 0.6)), 0.135
    ),
    "arm_binpick_hard": ArmTask(
        "arm_binpick_hard", (-0.3, 0.6), (0.3, 0.6), 0.15, ((-0.3, 0.6), (0.3, 0.6)), 0.185
    ),
}

BIN_WALL_HALF_THICK = 0.005
BIN_WALL_HALF_HEIGHT = 0.033  # 6.6 cm walls
BIN_RGBA = ("0.2 0.3 0.9 1", "0.9 0.2 0.2 1")  # start bin blue, goal bin red
BIN_COLLIDERS = ("cube", "hand", "left_finger", "right_finger")


def bin_walls(task: ArmTask) -> list[tuple[str, tuple[float, ...], tuple[float, ...], str]]:
    """(name, centre xyz, half-size xyz, rgba) of the 8 wall boxes of a binpick scene."""
    t, h, inner = BIN_WALL_HALF_THICK, BIN_WALL_HALF_HEIGHT, task.bin_inner_half
    walls = []
    if task.bin_centers is None:
        return walls
    for k, ((x, y), rgba) in enumerate(zip(task.bin_centers, BIN_RGBA, strict=True)):
        off = inner + t
        sides = {
            "south": ((x, y - off, h), (inner + 2 * t, t, h)),
            "north": ((x, y + off, h), (inner + 2 * t, t, h)),
            "west": ((x - off, y, h), (t, inner, h)),
            "east": ((x + off, y, h), (t, inner, h)),
        }
        for side, (pos, size) in sides.items():
            walls.append((f"bin{k}_{side}", pos, size, rgba))
    return walls


def arm_xml(task: ArmTask) -> str:
    """The arm MJCF plus, for binpick, the two bins, their contact pairs and impratio 10."""
    root = ET.fromstring(ASSET.read_text())
    if not task.bins:
        # Push scenes are the bare arm, cube and table: the regions are only
        # drawn at render time (``Arm.regions``), so both share one model.
        return ET.tostring(root, encoding="unicode")
    root.find("option").set("impratio", f"{BINPICK_IMPRATIO:g}")
    world, contact = root.find("worldbody"), root.find("contact")
    for name, pos, size, rgba in bin_walls(task):
        attrs = {"name": name, "type": "box", "rgba": rgba}
        attrs["pos"] = " ".join(f"{v:.4f}" for v in pos)
        attrs["size"] = " ".join(f"{v:.4f}" for v in size)
        ET.SubElement(world, "geom", attrs)
        for other in BIN_COLLIDERS:
            ET.SubElement(contact, "pair", {"geom1": other, "geom2": name})
    return ET.tostring(root, encoding="unicode")


def sample_cube_and_goal(task: ArmTask, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cube start (dropped from z 0.07) and goal (resting, z 0.03), uniform in ±half_range."""
    cube_rng, goal_rng = jax.random.split(rng)
    r = task.half_range
    cube_xy = jnp.asarray(task.start_center) + jax.random.uniform(cube_rng, (2,), minval=-r, maxval=r)
    goal_xy = jnp.asarray(task.goal_center) + jax.random.uniform(goal_rng, (2,), minval=-r, maxval=r)
    return jnp.append(cube_xy, CUBE_Z0), jnp.append(goal_xy, GOAL_Z)


def commanded_targets(action: jax.Array) -> jax.Array:
    """[-1, 1]^5 → the 9 actuator controls: 7 joint-angle commands and 2 finger targets."""
    action = jnp.clip(action, -1.0, 1.0)
    lo, hi = jnp.asarray(ACTION_LO), jnp.asarray(ACTION_HI)
    arm = jnp.zeros(7).at[jnp.array(ACTUATED_JOINTS)].set(action[:4])
    arm = 0.5 * (lo + hi) + arm * 0.5 * (hi - lo)
    finger = jnp.where(action[4] > 0, FINGER_CLOSED, FINGER_OPEN)
    return jnp.concatenate([arm, jnp.full(2, finger)])


class Arm(GoalEnv, PipelineEnv):
    def __init__(
        self,
        task: str = "arm_push_easy",
        backend: str = "mjx",
        episode_length: int = 1000,
        success_threshold: float = 0.1,
        easy_threshold: float = 0.3,
        n_frames: int = SUBSTEPS,
    ):
        if backend not in ARM_BACKENDS:
            raise ValueError(
                f"unknown backend {backend!r} for the arm tasks; valid: {', '.join(ARM_BACKENDS)}"
            )
        if task not in TASKS:
            raise ValueError(f"unknown arm task {task!r}; valid: {', '.join(TASKS)}")
        self.task = TASKS[task]
        self.hard_threshold = HARD_THRESHOLD
        sys = mjcf.loads(self.model_xml())
        PipelineEnv.__init__(self, sys=sys, backend=backend, n_frames=n_frames)
        mj = sys.mj_model
        # Brax link indices exclude the world body; the hand is fused into link 7.
        self._link7 = mj.body("link7").id - 1
        self._fingers = np.array([mj.body("left_finger").id - 1, mj.body("right_finger").id - 1])
        self._arm_qadr = np.array([mj.joint(f"joint{k}").qposadr[0] for k in range(1, 8)])
        self._finger_qadr = np.array([mj.joint(n).qposadr[0] for n in ("finger_left", "finger_right")])
        self.spec = GoalSpec(
            state_size=17,
            goal_indices=(0, 1, 2),
            success_threshold=success_threshold,
            easy_threshold=easy_threshold,
            episode_length=episode_length,
        )

    def model_xml(self) -> str:
        return arm_xml(self.task)

    def regions(self) -> list[tuple[tuple[float, float], float, tuple[float, ...]]]:
        """(centre xy, half-width, rgba) of the start and goal regions, for drawing push scenes."""
        r = self.task.half_range
        return [
            (self.task.start_center, r, (0.2, 0.3, 0.9, 1.0)),
            (self.task.goal_center, r, (0.9, 0.2, 0.2, 1.0)),
        ]

    @property
    def action_size(self) -> int:
        return 5

    def _reset(self, rng: jax.Array):
        cube, goal = sample_cube_and_goal(self.task, rng)
        q = jnp.asarray(self.sys.init_q)
        q = q.at[0:3].set(cube).at[3:7].set(jnp.array([1.0, 0, 0, 0]))
        q = q.at[self._arm_qadr].set(ARM_Q0).at[self._finger_qadr].set(FINGER_Q0)
        pipeline_state = self.pipeline_init(q, jnp.zeros(self.sys.qd_size()))
        return pipeline_state, self._state_vec(pipeline_state), goal

    def _step(self, pipeline_state, action: jax.Array):
        pipeline_state = self.pipeline_step(pipeline_state, commanded_targets(action))
        return pipeline_state, self._state_vec(pipeline_state)

    def hand(self, pipeline_state) -> tuple[jax.Array, jax.Array]:
        """World position and linear velocity of the link-7 origin (the reference's end effector).

        MJX's link poses are computed at the start of the last substep, so they
        lag ``q`` by one 2 ms substep, as in the paper's code.
        """
        k = self._link7
        return pipeline_state.x.pos[k], pipeline_state.xd.vel[k]

    def _state_vec(self, pipeline_state) -> jax.Array:
        q = pipeline_state.q
        hand_pos, hand_vel = self.hand(pipeline_state)
        left, right = pipeline_state.x.pos[self._fingers[0]], pipeline_state.x.pos[self._fingers[1]]
        opening = jnp.linalg.norm(right - left, keepdims=True)
        return jnp.concatenate([q[0:3], q[self._arm_qadr], hand_pos, hand_vel, opening])
