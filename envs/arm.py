"""Goal-conditioned manipulation with a Panda-like 7-DoF arm on MJX.

Four tasks share one arm (``envs/assets/arm.xml``) and differ in the scene:

- ``arm_push_easy`` / ``arm_push_hard``: push a cube on the table from a start
  region (blue) to a goal region (red); the regions are ±0.1 m (easy) or
  ±0.25 m (hard) around their centres.
- ``arm_binpick_easy`` / ``arm_binpick_hard``: lift the cube out of bin A and
  place it in bin B; start and goal are drawn ±0.05 m (easy) or ±0.15 m
  (hard) around the bin centres. The bin walls are higher than the cube, so
  it cannot simply be pushed across.

The 17-d state is: cube position (3) ⊕ the 7 arm joint angles ⊕ pinch point
(between the fingertips) position (3) and linear velocity (3) ⊕ finger
opening (1). The goal is the cube's position = ``state[0:3]``.

As in the paper's code the 5-d action sets position targets for joints 1, 2,
4 and 6 (each [-1, 1] spans the joint's range) and the gripper (-1 open,
+1 closed); joints 3, 5 and 7 are held at their start angles. This keeps the
gripper's roll fixed, which makes the tasks learnable without changing what
the arm can reach on the table.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
from brax import math
from brax.envs.base import PipelineEnv
from brax.io import mjcf
from etils import epath

from deepcrl.envs.base import GoalEnv, GoalSpec

# Brax's own backends accept only Euler integration, while the arm's stiff
# position servos need MuJoCo's implicitfast integrator: MJX alone runs it.
ARM_BACKENDS = ("mjx",)
ASSET = epath.Path(__file__).parent / "assets" / "arm.xml"

# Start angles of the 7 arm joints: the hand above the table, pointing down.
ARM_Q0 = np.array([1.571, 0.742, 0.0, -1.571, 0.0, 2.313, 0.785], np.float32)
FINGER_OPEN = 0.04
CUBE_HALF = 0.03
ACTUATED_JOINTS = (0, 1, 3, 5)  # joints 1, 2, 4, 6 (0-based)
HARD_THRESHOLD = 0.03  # the paper's "hard" success radius; not a reported metric


@dataclasses.dataclass(frozen=True)
class ArmTask:
    """Scene and sampling regions of one arm task (all positions in metres)."""

    name: str
    start_center: tuple[float, float]
    goal_center: tuple[float, float]
    half_range: float  # start and goal are uniform in ±half_range around their centres (x, y)
    bins: bool  # binpick scenes have two walled bins instead of flat regions


TASKS = {
    "arm_push_easy": ArmTask("arm_push_easy", (-0.1, 0.6), (0.1, 0.6), 0.1, bins=False),
    "arm_push_hard": ArmTask("arm_push_hard", (-0.25, 0.5), (0.25, 0.5), 0.25, bins=False),
    "arm_binpick_easy": ArmTask("arm_binpick_easy", (-0.2, 0.55), (0.2, 0.55), 0.05, bins=True),
    "arm_binpick_hard": ArmTask("arm_binpick_hard", (-0.2, 0.55), (0.2, 0.55), 0.15, bins=True),
}

BIN_INNER_HALF = 0.18  # a bin's inner half-width: the hard range (0.15) plus the cube (0.03)
BIN_WALL_HALF_THICK = 0.01
BIN_WALL_HEIGHT = 0.08


def _box(parent: ET.Element, name: str, pos, size, rgba: str) -> None:
    ET.SubElement(
        parent,
        "geom",
        {
            "name": name,
            "type": "box",
            "pos": " ".join(f"{v:.4f}" for v in pos),
            "size": " ".join(f"{v:.4f}" for v in size),
            "rgba": rgba,
        },
    )


def arm_xml(task: ArmTask) -> str:
    """The arm MJCF plus, for binpick tasks, the two bins and their contact pairs."""
    root = ET.fromstring(ASSET.read_text())
    world = root.find("worldbody")
    contact = root.find("contact")
    if not task.bins:
        # Push scenes are the bare arm, cube and table: the start and goal
        # regions are only drawn at render time (``Arm.regions``), so both
        # push tasks share one physics model.
        return ET.tostring(root, encoding="unicode")
    # Two bins side by side along x, sharing a divider wall.
    (xa, y), (xb, _) = task.start_center, task.goal_center
    inner, t, h = BIN_INNER_HALF, BIN_WALL_HALF_THICK, 0.5 * BIN_WALL_HEIGHT
    x_lo, x_hi = xa - inner - t, xb + inner + t
    span = 0.5 * (x_hi - x_lo) + t
    mid = 0.5 * (x_lo + x_hi)
    walls = {
        "bin_left": ((x_lo, y, h), (t, inner + 2 * t, h)),
        "bin_right": ((x_hi, y, h), (t, inner + 2 * t, h)),
        "bin_divider": ((0.5 * (xa + xb), y, h), (0.5 * (xb - xa) - inner, inner, h)),
        "bin_front": ((mid, y - inner - t, h), (span, t, h)),
        "bin_back": ((mid, y + inner + t, h), (span, t, h)),
    }
    for name, (pos, size) in walls.items():
        _box(world, name, pos, size, "0.55 0.4 0.25 1")
        for other in ("cube", "hand", "left_finger", "right_finger"):
            ET.SubElement(contact, "pair", {"geom1": other, "geom2": name})
    blue, red = "0.2 0.3 0.9 1", "0.9 0.2 0.2 1"  # start bin, goal bin
    for name, x, rgba in (("binA_floor", xa, blue), ("binB_floor", xb, red)):
        _box(world, name, (x, y, 0.0005), (inner, inner, 0.0005), rgba)
    return ET.tostring(root, encoding="unicode")


class Arm(GoalEnv, PipelineEnv):
    def __init__(
        self,
        task: str = "arm_push_easy",
        backend: str = "mjx",
        episode_length: int = 150,
        success_threshold: float = 0.1,
        easy_threshold: float = 0.3,
        n_frames: int = 4,
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
        # Kinematic constants for the state vector, read from the compiled model
        # (static bodies are fused, so look the site up by its owning body).
        site = mj.site("pinch")
        self._pinch_link = int(site.bodyid[0]) - 1  # brax link index (world excluded)
        self._pinch_offset = np.asarray(site.pos, np.float32)
        self._arm_qadr = np.array([mj.joint(f"joint{k}").qposadr[0] for k in range(1, 8)])
        self._finger_qadr = np.array([mj.joint(n).qposadr[0] for n in ("finger_left", "finger_right")])
        lo, hi = mj.actuator_ctrlrange[:7, 0], mj.actuator_ctrlrange[:7, 1]
        self._ctrl_lo, self._ctrl_hi = jnp.asarray(lo), jnp.asarray(hi)
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
        """(centre xy, half-width, rgba) of the start and goal regions, for drawing."""
        r = self.task.half_range + CUBE_HALF
        return [
            (self.task.start_center, r, (0.2, 0.3, 0.9, 1.0)),
            (self.task.goal_center, r, (0.9, 0.2, 0.2, 1.0)),
        ]

    @property
    def action_size(self) -> int:
        return 5

    def _sample_xy(self, rng: jax.Array, center: tuple[float, float]) -> jax.Array:
        r = self.task.half_range
        return jnp.asarray(center) + jax.random.uniform(rng, (2,), minval=-r, maxval=r)

    def _reset(self, rng: jax.Array):
        cube_rng, goal_rng = jax.random.split(rng)
        q = jnp.asarray(self.sys.init_q)
        cube_xy = self._sample_xy(cube_rng, self.task.start_center)
        q = q.at[0:3].set(jnp.append(cube_xy, CUBE_HALF)).at[3:7].set(jnp.array([1.0, 0, 0, 0]))
        q = q.at[self._arm_qadr].set(ARM_Q0).at[self._finger_qadr].set(FINGER_OPEN)
        qd = jnp.zeros(self.sys.qd_size())
        ctrl = jnp.concatenate([jnp.asarray(ARM_Q0), jnp.full(2, FINGER_OPEN)])
        pipeline_state = self.pipeline_init(q, qd, ctrl=ctrl)
        goal = jnp.append(self._sample_xy(goal_rng, self.task.goal_center), CUBE_HALF)
        return pipeline_state, self._state_vec(pipeline_state), goal

    def _ctrl(self, action: jax.Array) -> jax.Array:
        """[-1, 1]^5 → position targets for the 7 joints and the 2 fingers."""
        action = jnp.clip(action, -1.0, 1.0)
        lo, hi = self._ctrl_lo[jnp.array(ACTUATED_JOINTS)], self._ctrl_hi[jnp.array(ACTUATED_JOINTS)]
        targets = (
            jnp.asarray(ARM_Q0).at[jnp.array(ACTUATED_JOINTS)].set(lo + (action[:4] + 1) * 0.5 * (hi - lo))
        )
        finger = FINGER_OPEN * (1.0 - action[4]) * 0.5
        return jnp.concatenate([targets, jnp.full(2, finger)])

    def _step(self, pipeline_state, action: jax.Array):
        pipeline_state = self.pipeline_step(pipeline_state, self._ctrl(action))
        return pipeline_state, self._state_vec(pipeline_state)

    def pinch(self, pipeline_state) -> tuple[jax.Array, jax.Array]:
        """World position and linear velocity of the point between the fingertips.

        Read from MJX's link poses, which are computed at the start of the last
        substep (one 10 ms substep behind ``q``), as in the paper's code.
        """
        k = self._pinch_link
        pos, rot = pipeline_state.x.pos[k], pipeline_state.x.rot[k]
        offset = math.rotate(jnp.asarray(self._pinch_offset), rot)
        vel = pipeline_state.xd.vel[k] + jnp.cross(pipeline_state.xd.ang[k], offset)
        return pos + offset, vel

    def _state_vec(self, pipeline_state) -> jax.Array:
        q = pipeline_state.q
        pinch_pos, pinch_vel = self.pinch(pipeline_state)
        opening = jnp.sum(q[self._finger_qadr], keepdims=True)
        return jnp.concatenate([q[0:3], q[self._arm_qadr], pinch_pos, pinch_vel, opening])
