"""Environment registry: one name → one goal-conditioned env constructor.

Every env module is imported here: ``envs.base`` needs Brax (and so MuJoCo and
MJX) anyway, so importing the Brax envs up front adds next to nothing.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from functools import partial

from deepcrl.envs.mjx_quiet import import_mjx_quietly

import_mjx_quietly()  # before Brax (imported by envs.base) imports mujoco.mjx noisily
from deepcrl.envs.ant import Ant, AntMaze  # noqa: E402
from deepcrl.envs.arm import Arm  # noqa: E402
from deepcrl.envs.base import GoalEnv, GoalSpec, goal_metrics  # noqa: E402
from deepcrl.envs.humanoid import Humanoid, HumanoidMaze  # noqa: E402
from deepcrl.envs.point_mass import DIVIDER_WALLS, PointMass  # noqa: E402
from deepcrl.envs.point_mass_maze import PointMassMaze  # noqa: E402

# Brax warns on every model load that its own pipelines are unmaintained; the
# paper ran ant/humanoid on Brax's spring backend on purpose (see DESIGN.md), so silence it.
warnings.filterwarnings("ignore", message="Brax System, piplines", category=UserWarning)

__all__ = [
    "GoalEnv",
    "GoalSpec",
    "goal_metrics",
    "make_env",
    "env_names",
    "register",
    "describe_envs",
    "EVAL_ENVS",
]

_REGISTRY: dict[str, Callable[..., GoalEnv]] = {}


def register(name: str, factory: Callable[..., GoalEnv]) -> None:
    _REGISTRY[name] = factory


def env_names() -> list[str]:
    return sorted(_REGISTRY)


def make_env(name: str, **kwargs) -> GoalEnv:
    """Build a registered env; unknown names raise a ValueError listing valid ones.

    Every env accepts ``backend=``; an unsupported backend raises a ValueError
    naming the valid ones for that env.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, env_names(), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(f"unknown env {name!r}; {hint}valid envs: {', '.join(env_names())}")
    return _REGISTRY[name](**kwargs)


def describe_envs(names: list[str] | None = None) -> list[dict]:
    """One dict per env (sizes, goal indices, thresholds, episode length, backend).

    Builds each env (no compilation), so the figures are the real ones; this
    takes a few seconds for the whole suite.
    """
    rows = []
    for name in names or env_names():
        rows.append({"name": name, **make_env(name).describe()})
    return rows


register("point_mass", PointMass)
register("point_mass_walls", partial(PointMass, walls=DIVIDER_WALLS))
for _maze in ("u4", "u5", "big", "hardest"):  # envs/point_mass_maze.py: MAZES, EVAL_MAZES
    register(f"point_mass_{_maze}_maze", partial(PointMassMaze, _maze))
    if _maze != "hardest":
        register(f"point_mass_{_maze}_maze_eval", partial(PointMassMaze, f"{_maze}_eval"))
register("ant", Ant)
register("ant_u4_maze", partial(AntMaze, "u4"))
register("ant_u5_maze", partial(AntMaze, "u5"))
register("ant_big_maze", partial(AntMaze, "big"))
register("ant_hardest_maze", partial(AntMaze, "hardest"))
register("humanoid", Humanoid)
register("humanoid_u_maze", partial(HumanoidMaze, "humanoid_u"))
register("humanoid_big_maze", partial(HumanoidMaze, "big"))
# Evaluation layouts (the paper's ``*_eval`` mazes): same walls and start, far goal cells only.
register("ant_u4_maze_eval", partial(AntMaze, "u4_eval"))
register("ant_u5_maze_eval", partial(AntMaze, "u5_eval"))
register("ant_big_maze_eval", partial(AntMaze, "big_eval"))
register("humanoid_u_maze_eval", partial(HumanoidMaze, "humanoid_u_eval"))
register("humanoid_big_maze_eval", partial(HumanoidMaze, "humanoid_big_eval"))

# Training env → the env the paper evaluated it on (its job.slurm: ant_big_maze → ant_big_maze_eval).
EVAL_ENVS: dict[str, str] = {
    name: f"{name}_eval"
    for name in ("ant_u4_maze", "ant_u5_maze", "ant_big_maze", "humanoid_u_maze", "humanoid_big_maze")
}
for _task in ("arm_push_easy", "arm_push_hard", "arm_binpick_easy", "arm_binpick_hard"):
    register(_task, partial(Arm, _task))
