"""Paper experiments as data: each study module turns (envs, seeds, scale, options) into runs.

A study module defines ``DESCRIPTION``, ``DEFAULT_ENVS`` and ``DEFAULT_OPTIONS``
(per scale), the report's plot keys, and ``get_runs(envs, seeds, scale,
options, base) -> list[Run]`` (``base(env)`` is a run's starting config, for
studies that size networks from it). Keeping the definition separate from the scheduler
lets ``launch/study.py`` run, resume and report every study the same way.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, NamedTuple

from ml_collections import ConfigDict

from deepcrl.configs import defaults
from deepcrl.configs.paper import envs as paper_envs

STUDIES = ("depth_sweep", "decoupling", "batch_sweep", "width_vs_depth")
SCALES = ("paper", "cpu")
MAX_DEPTH = 1024


class Run(NamedTuple):
    """One run of a study: its config is ``base_config(scale, env)`` + ``overrides``."""

    name: str  # unique in the study; also the run folder's name
    overrides: dict[str, Any]  # config fields this run sets (env and seed included)
    condition: dict[str, Any]  # what the report groups seeds by (env + the study's variables)


def get_study(name: str) -> ModuleType:
    """The study module; an unknown name raises a ValueError listing the valid ones."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; valid studies: {', '.join(STUDIES)}")
    return importlib.import_module(f"deepcrl.configs.studies.{name}")


def cpu_base() -> ConfigDict:
    """Tiny settings for ``--scale cpu``: point-mass-sized runs that finish in about a minute on 2 cores."""
    c = defaults.get_config()
    c.total_env_steps = 100_000
    c.num_envs = 32
    c.num_eval_envs = 32
    c.num_minibatches = 8
    c.critic_width = 32
    c.actor_width = 32
    c.num_evals = 5
    return c


# ``--scale cpu`` on the point-mass mazes (envs/point_mass_maze.py): the settings at which both depths
# learn (docs/results.md, F and G): width 64 and 32 SGD steps per collection step (at A's 8 and 100k
# steps nothing learned). A study module may set its own length (``CPU_MAZE_RUN``) so that the whole
# study command stays within an hour on two idle cores.
CPU_MAZE_SETTINGS = {
    "total_env_steps": 300_000, "num_evals": 6, "critic_width": 64, "actor_width": 64, "num_minibatches": 32,
}  # fmt: skip


def is_point_mass_maze(env: str) -> bool:
    return env.startswith("point_mass_") and "_maze" in env


def base_config(scale: str, env: str, maze_run: dict[str, Any] | None = None) -> ConfigDict:
    """The config every run of ``env`` starts from: the paper's per-env preset, or ``cpu_base``
    (plus ``CPU_MAZE_SETTINGS`` and the study's ``maze_run`` on a point-mass maze)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    if scale == "paper":
        return paper_envs.get_config(env)
    c = cpu_base()
    c.env = env
    if is_point_mass_maze(env):
        c.update({**CPU_MAZE_SETTINGS, **(maze_run or {})})
    return c


def check_depths(depths: list[int], what: str = "depths") -> list[int]:
    for d in depths:
        if d <= 0 or d % 4 or d > MAX_DEPTH:
            raise ValueError(f"{what} must be multiples of 4 between 4 and {MAX_DEPTH}, got {d}")
    return list(depths)


def seed_tag(seed: int) -> str:
    return f"s{seed}"
