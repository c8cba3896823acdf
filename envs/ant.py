"""Goal-conditioned Ant on Brax (spring backend by default).

State is the 29-d ``qpos ⊕ qvel`` of Brax's ant model (torso x, y included),
the goal is the torso's (x, y) = ``state[0:2]``. As in the paper's code, a
reset adds ±``reset_noise_scale`` uniform noise to every position (torso x, y
included, around the start) and ``reset_noise_scale``·N(0, 1) to every
velocity, and an episode ends early when the torso leaves ``healthy_z_range``
(flipped or jumping); otherwise it is truncated at ``episode_length`` by the
wrapper. Subclasses override ``model_xml``, ``start_xy`` and ``sample_goal``;
the mazes (``AntMaze``) get them from ``envs.maze.MazeTask``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
from brax.envs.base import PipelineEnv
from brax.io import mjcf
from etils import epath

from deepcrl.envs.base import GoalEnv, GoalSpec
from deepcrl.envs.maze import MazeTask, set_geom_collision

BACKENDS = ("spring", "positional", "generalized", "mjx")


def brax_asset_xml(name: str) -> str:
    """The MJCF text of a model shipped inside the installed Brax package."""
    return (epath.resource_path("brax") / "envs/assets" / name).read_text()


class Ant(GoalEnv, PipelineEnv):
    def __init__(
        self,
        backend: str = "spring",
        episode_length: int = 1000,
        goal_distance: tuple[float, float] = (10.0, 10.0),
        success_threshold: float = 0.5,
        easy_threshold: float = 2.0,
        reset_noise_scale: float = 0.1,
        terminate_when_unhealthy: bool = True,
        healthy_z_range: tuple[float, float] = (0.2, 1.0),
        physics_timestep: float = 0.0,
    ):
        """``physics_timestep`` (s per substep; 0: the paper's 0.005 on spring/positional, the model's otherwise)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        sys = mjcf.loads(self.model_xml())
        n_frames = 5
        if backend in ("spring", "positional"):
            sys = sys.tree_replace({"opt.timestep": 0.005})
            n_frames = 10
        if physics_timestep:
            sys = sys.tree_replace({"opt.timestep": float(physics_timestep)})
        if backend == "mjx":
            sys = sys.tree_replace(
                {
                    "opt.solver": mujoco.mjtSolver.mjSOL_NEWTON,
                    "opt.disableflags": mujoco.mjtDisableBit.mjDSBL_EULERDAMP,
                    "opt.iterations": 1,
                    "opt.ls_iterations": 4,
                }
            )
        if backend == "positional":
            sys = sys.replace(actuator=sys.actuator.replace(gear=200 * jnp.ones_like(sys.actuator.gear)))
        PipelineEnv.__init__(self, sys=sys, backend=backend, n_frames=n_frames)
        self.goal_distance = goal_distance
        self.reset_noise_scale = reset_noise_scale
        self.terminate_when_unhealthy = terminate_when_unhealthy
        self.healthy_z_range = healthy_z_range
        self.spec = GoalSpec(
            state_size=sys.q_size() + sys.qd_size(),
            goal_indices=(0, 1),
            success_threshold=success_threshold,
            easy_threshold=easy_threshold,
            episode_length=episode_length,
        )

    # -- hooks for subclasses ------------------------------------------------
    def model_xml(self) -> str:
        return brax_asset_xml("ant.xml")

    def start_xy(self, rng: jax.Array) -> jax.Array:
        return jnp.zeros(2)

    def sample_goal(self, rng: jax.Array, start_xy: jax.Array) -> jax.Array:
        angle_rng, dist_rng = jax.random.split(rng)
        angle = jax.random.uniform(angle_rng, minval=0.0, maxval=2 * jnp.pi)
        dist = jax.random.uniform(dist_rng, minval=self.goal_distance[0], maxval=self.goal_distance[1])
        return start_xy + dist * jnp.array([jnp.cos(angle), jnp.sin(angle)])

    # -- GoalEnv ---------------------------------------------------------------
    def _reset(self, rng: jax.Array):
        start_rng, goal_rng, q_rng, qd_rng = jax.random.split(rng, 4)
        noise = self.reset_noise_scale
        q = self.sys.init_q + jax.random.uniform(q_rng, (self.sys.q_size(),), minval=-noise, maxval=noise)
        xy = self.start_xy(start_rng)
        q = q.at[:2].add(xy)  # the start plus the same position noise as every other coordinate
        qd = noise * jax.random.normal(qd_rng, (self.sys.qd_size(),))
        pipeline_state = self.pipeline_init(q, qd)
        return pipeline_state, self._state_vec(pipeline_state), self.sample_goal(goal_rng, xy)

    def _step(self, pipeline_state, action: jax.Array):
        pipeline_state = self.pipeline_step(pipeline_state, action)
        return pipeline_state, self._state_vec(pipeline_state)

    def _terminated(self, pipeline_state) -> jax.Array:
        if not self.terminate_when_unhealthy:
            return jnp.zeros((), dtype=bool)
        z = pipeline_state.x.pos[0, 2]
        return (z < self.healthy_z_range[0]) | (z > self.healthy_z_range[1])

    @staticmethod
    def _state_vec(pipeline_state) -> jax.Array:
        return jnp.concatenate([pipeline_state.q, pipeline_state.qd])


# The reference's ant maze model: torso and hip capsules are hit by walls and
# feet; the feet hit the floor, the walls, the body and each other.
ANT_MAZE_CONTACTS: dict[str, tuple[int, int]] = {
    "torso_geom": (0, 1),
    **{f"aux_{k}_geom": (0, 1) for k in range(1, 5)},
    **{f"{f}_foot_geom": (1, 1) for f in ("left", "right", "third", "fourth")},
}


class AntMaze(MazeTask, Ant):
    """Ant in a maze of box walls (cell 4 m); starts at the R cell's centre, goals drawn from G cells.

    Contacts as in the paper's ``ant_maze.xml`` (MuJoCo tests a pair when
    ``contype_a & conaffinity_b`` or ``contype_b & conaffinity_a``): walls are
    ``contype=conaffinity=1``; the torso sphere and the four hip capsules get
    ``conaffinity=1`` (walls and feet hit them, the floor does not); the feet
    get ``contype=conaffinity=1`` (they hit floor, walls, torso, hips and each
    other). The upper and lower leg capsules touch nothing.
    """

    def __init__(self, maze: str, cell_size: float = 4.0, **kwargs):
        """The paper's ant cell is 4 m; ``goal_jitter``, ``merge_walls`` and the rest pass through."""
        super().__init__(maze, cell_size, **kwargs)

    def robot_xml(self) -> str:
        """Brax's ant with the paper's maze contacts (``ANT_MAZE_CONTACTS``)."""
        return set_geom_collision(super().robot_xml(), ANT_MAZE_CONTACTS)

    sample_goal = MazeTask.maze_goal  # the ant's name for its goal hook
