"""Depth sweep (the paper's Figures 1 and 5): critic and actor depth together, 4 → 64 (up to 1024)."""

from __future__ import annotations

from deepcrl.configs.paper.envs import HEADLINE_ENVS
from deepcrl.configs.studies import Run, check_depths, seed_tag

DESCRIPTION = "Success vs network depth (critic and actor together), per environment."
# cpu: two point-mass mazes (issue 11; settings in configs/studies CPU_MAZE_SETTINGS, results in docs/results.md).
DEFAULT_ENVS = {"paper": list(HEADLINE_ENVS), "cpu": ["point_mass_u4_maze", "point_mass_big_maze"]}
DEFAULT_OPTIONS = {"paper": {"depths": [4, 8, 16, 32, 64]}, "cpu": {"depths": [4, 16]}}
# 1M steps: both depths reach their plateau (docs/results.md F; 41 min on two idle cores).
CPU_MAZE_RUN = {"total_env_steps": 1_000_000, "num_evals": 10}

CURVE_KEYS = ("depth",)  # one success-vs-steps curve per depth
FINAL_X, FINAL_LINES = "depth", ()  # final success vs depth, one line per panel
COVERAGE_BY = "depth"  # the collector is the agent itself


def get_runs(envs: list[str], seeds: list[int], scale: str, options: dict, base=None) -> list[Run]:
    depths = check_depths(options["depths"])
    return [
        Run(
            f"{env}-d{depth}-{seed_tag(seed)}",
            {"env": env, "seed": seed, "critic_depth": depth, "actor_depth": depth},
            {"env": env, "depth": depth},
        )
        for env in envs
        for depth in depths
        for seed in seeds
    ]
