"""Goal-conditioned Humanoid on Brax (spring backend by default), plain and in mazes.

The robot is Brax's ``humanoid.xml``. To match the paper's 268-d state, the
model gets one extra body, ``target``: a massless-in-effect marker on two
slide joints (x, y) at height 1.25 m that holds the goal, exactly as the
paper's code did. The state is then

    q (26: torso xyz, quat, 17 joints, target x, y)
  ⊕ qd (25)
  ⊕ per link, inertia about the whole-body centre of mass (12 links × 9) and mass (12)
  ⊕ per link, mass-weighted linear and angular velocity of its centre of mass (12 × 6)
  ⊕ actuator generalized forces of the last action (25)
  = 268,

and the goal is the torso's (x, y, z) = ``state[0:3]``; goals sit at torso
height 1.25 m. Note the quirk inherited from the paper: the commanded goal's
(x, y) is visible inside the state (``q[24:26]``). ``target_in_state=False``
drops the marker and gives a 246-d state without that leak.

Episodes end early when the torso height leaves ``healthy_z_range`` (the
humanoid fell), as in the paper's code.

As in the paper's code: reset noise 0 (every reset is the same standing pose);
every body geom collides with the floor (the paper's ``humanoid.xml`` sets
``contype=1`` as the geom default; Brax's own file lets only the feet touch
it); under spring/positional the per-link inertia feature uses the rotational
inertia as Brax's spring backend scales it, ``diag(I)**(1 - spring_inertia_scale)``
with ``spring_inertia_scale=1``, i.e. identity, plus the parallel-axis term.

Control step (``physics_timestep`` s per substep, 10 substeps on spring; 0 =
this default). Plain ``humanoid`` steps 0.003 s × 10 = 0.03 s per env step,
the mazes 0.0015 s × 10 = 0.015 s. Evidence: the paper's ``envs/humanoid.py``
asks for 0.0015 through ``sys.tree_replace({'opt.timestep': 0.0015})`` while
its ``envs/humanoid_maze.py`` uses ``sys.replace(dt=0.0015)``; under the Brax it
pinned (0.10.1) the spring pipeline and ``PipelineEnv.dt`` read ``sys.dt``, so
only the maze change took effect and plain humanoid ran at the model's 0.003 s
(a 1000-step episode is 30 s). In the Brax here
``opt.timestep`` is the step, so we set the value the paper effectively ran.
``--set physics_timestep=0.0015`` selects the step the paper's code asked for.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import mujoco
from brax import actuator, math
from brax.envs.base import PipelineEnv
from brax.io import mjcf

from deepcrl.envs.ant import BACKENDS, brax_asset_xml
from deepcrl.envs.base import GoalEnv, GoalSpec
from deepcrl.envs.maze import MazeTask

GOAL_Z = 1.25  # torso height of a standing humanoid; the goal's z


def _humanoid_xml(target_in_state: bool) -> str:
    root = ET.fromstring(brax_asset_xml("humanoid.xml"))
    # Every body geom touches the floor (and maze walls), as in the paper's model;
    # body parts still never collide with each other (their conaffinity stays 0).
    root.find("default").find("geom").set("contype", "1")
    if target_in_state:
        worldbody = root.find("worldbody")
        body = ET.SubElement(worldbody, "body", {"name": "target", "pos": f"0 0 {GOAL_Z}"})
        for axis, name in (("1 0 0", "target_x"), ("0 1 0", "target_y")):
            ET.SubElement(
                body,
                "joint",
                {
                    "name": name,
                    "type": "slide",
                    "axis": axis,
                    "limited": "false",
                    "armature": "0",
                    "damping": "0",
                    "stiffness": "0",
                },
            )
        ET.SubElement(
            body,
            "geom",
            {
                "name": "target",
                "type": "sphere",
                "size": "0.1",
                "mass": "1",
                "contype": "0",
                "conaffinity": "0",
                "rgba": "1 0.2 0.2 0.5",
            },
        )
    return ET.tostring(root, encoding="unicode")


class Humanoid(GoalEnv, PipelineEnv):
    DEFAULT_TIMESTEP = 0.003  # s per substep on spring/positional (see the module docstring)

    def __init__(
        self,
        backend: str = "spring",
        episode_length: int = 1000,
        goal_distance: tuple[float, float] = (1.0, 5.0),
        success_threshold: float = 0.5,
        easy_threshold: float = 2.0,
        reset_noise_scale: float = 0.0,
        terminate_when_unhealthy: bool = True,
        healthy_z_range: tuple[float, float] = (1.0, 2.0),
        target_in_state: bool = True,
        physics_timestep: float = 0.0,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.target_in_state = target_in_state
        sys = mjcf.loads(self.model_xml())
        n_frames = 5
        if backend in ("spring", "positional"):
            # The paper's settings for the maximal-coordinate backends: its
            # effective timestep (module docstring) and stronger motors.
            sys = sys.tree_replace({"opt.timestep": self.DEFAULT_TIMESTEP})
            n_frames = 10
            gear = jnp.array([350.0] * 11 + [100.0] * 6)
            sys = sys.replace(actuator=sys.actuator.replace(gear=gear))
        if backend == "mjx":
            sys = sys.tree_replace(
                {
                    "opt.solver": mujoco.mjtSolver.mjSOL_NEWTON,
                    "opt.disableflags": mujoco.mjtDisableBit.mjDSBL_EULERDAMP,
                    "opt.iterations": 1,
                    "opt.ls_iterations": 4,
                }
            )
        if physics_timestep:
            sys = sys.tree_replace({"opt.timestep": float(physics_timestep)})
        PipelineEnv.__init__(self, sys=sys, backend=backend, n_frames=n_frames)
        self.goal_distance = goal_distance
        self.reset_noise_scale = reset_noise_scale
        self.terminate_when_unhealthy = terminate_when_unhealthy
        self.healthy_z_range = healthy_z_range
        n_links = sys.num_links()
        state_size = sys.q_size() + sys.qd_size() + 10 * n_links + 6 * n_links + sys.qd_size()
        self.spec = GoalSpec(
            state_size=state_size,
            goal_indices=(0, 1, 2),
            success_threshold=success_threshold,
            easy_threshold=easy_threshold,
            episode_length=episode_length,
        )
        self._n_body_q = 24  # free joint (7) + 17 hinges; the target's q follow
        self._n_body_qd = 23

    # -- hooks for subclasses ------------------------------------------------
    def model_xml(self) -> str:
        return _humanoid_xml(self.target_in_state)

    def start_xy(self, rng: jax.Array) -> jax.Array:
        return jnp.zeros(2)

    def sample_goal_xy(self, rng: jax.Array, start_xy: jax.Array) -> jax.Array:
        angle_rng, dist_rng = jax.random.split(rng)
        angle = jax.random.uniform(angle_rng, minval=0.0, maxval=2 * jnp.pi)
        dist = jax.random.uniform(dist_rng, minval=self.goal_distance[0], maxval=self.goal_distance[1])
        return start_xy + dist * jnp.array([jnp.cos(angle), jnp.sin(angle)])

    # -- GoalEnv ---------------------------------------------------------------
    @property
    def action_size(self) -> int:
        return self.sys.act_size()

    def _reset(self, rng: jax.Array):
        start_rng, goal_rng, q_rng, qd_rng = jax.random.split(rng, 4)
        noise = self.reset_noise_scale
        q = self.sys.init_q + jax.random.uniform(q_rng, (self.sys.q_size(),), minval=-noise, maxval=noise)
        qd = jax.random.uniform(qd_rng, (self.sys.qd_size(),), minval=-noise, maxval=noise)
        xy = self.start_xy(start_rng)
        q = q.at[:2].add(xy)
        goal_xy = self.sample_goal_xy(goal_rng, xy)
        if self.target_in_state:
            q = q.at[self._n_body_q :].set(goal_xy)
            qd = qd.at[self._n_body_qd :].set(0.0)
        pipeline_state = self.pipeline_init(q, qd)
        zero_action = jnp.zeros(self.action_size)
        goal = jnp.concatenate([goal_xy, jnp.array([GOAL_Z])])
        return pipeline_state, self._state_vec(pipeline_state, zero_action), goal

    def _step(self, pipeline_state, action: jax.Array):
        # Actions in [-1, 1] span the motors' control range [-0.4, 0.4].
        ctrl = action * self.sys.actuator.ctrl_range[:, 1]
        pipeline_state = self.pipeline_step(pipeline_state, ctrl)
        return pipeline_state, self._state_vec(pipeline_state, ctrl)

    def _terminated(self, pipeline_state) -> jax.Array:
        if not self.terminate_when_unhealthy:
            return jnp.zeros((), dtype=bool)
        z = pipeline_state.x.pos[0, 2]
        return (z < self.healthy_z_range[0]) | (z > self.healthy_z_range[1])

    def _state_vec(self, pipeline_state, ctrl: jax.Array) -> jax.Array:
        """q ⊕ qd ⊕ centre-of-mass inertia and velocity per link ⊕ actuator forces."""
        inertia = self.sys.link.inertia
        i_link = inertia.i
        if self.backend in ("spring", "positional"):
            # As the paper computed it: the diagonal scaled the way the spring
            # backend does, diag**(1 - spring_inertia_scale) (identity at its 1).
            diag = jnp.diagonal(i_link, axis1=-2, axis2=-1) ** (1 - self.sys.spring_inertia_scale)
            i_link = jax.vmap(jnp.diag)(diag)
        mass = inertia.mass
        x, xd = pipeline_state.x, pipeline_state.xd
        # Each link's centre of mass and its orientation in the world frame.
        com_pos = x.pos + jax.vmap(math.rotate)(inertia.transform.pos, x.rot)
        rot = jax.vmap(math.quat_to_3x3)(jax.vmap(math.quat_mul)(x.rot, inertia.transform.rot))
        body_com = jnp.sum(mass[:, None] * com_pos, 0) / jnp.sum(mass)
        # Rotate each link's inertia to the world frame, then move it to the
        # whole-body centre of mass (parallel-axis theorem).
        i_world = rot @ i_link @ jnp.swapaxes(rot, -1, -2)
        d = com_pos - body_com
        shift = mass[:, None, None] * (
            jnp.sum(d * d, -1)[:, None, None] * jnp.eye(3) - d[:, :, None] * d[:, None, :]
        )
        com_inertia = jnp.concatenate([(i_world + shift).reshape(-1, 9), mass[:, None]], -1)
        # Linear velocity of each link's centre of mass (mass-weighted, as a
        # share of total momentum), and its angular velocity.
        v_com = xd.vel + jnp.cross(xd.ang, com_pos - x.pos)
        com_velocity = jnp.concatenate([mass[:, None] * v_com / jnp.sum(mass), xd.ang], -1)
        tau = actuator.to_tau(self.sys, ctrl, pipeline_state.q, pipeline_state.qd)
        return jnp.concatenate(
            [pipeline_state.q, pipeline_state.qd, com_inertia.ravel(), com_velocity.ravel(), tau]
        )


class HumanoidMaze(MazeTask, Humanoid):
    """Humanoid in a maze (cell 2.0 m, walls 1.0 m high); starts at the R cell's centre, goals from G cells.

    Walls are ``contype=conaffinity=1`` as in the paper's code, so every body
    geom (``contype=1``) hits them, the upper body included (a humanoid can
    lean or fall against a 1 m wall). Physics steps 0.0015 s × 10.
    """

    DEFAULT_TIMESTEP = 0.0015

    def __init__(self, maze: str, cell_size: float = 2.0, **kwargs):
        """The paper's humanoid cell is 2 m; ``goal_jitter``, ``merge_walls`` and the rest pass through."""
        super().__init__(maze, cell_size, **kwargs)

    sample_goal_xy = MazeTask.maze_goal  # the humanoid's name for its goal hook
