"""Decoupling (the paper's Figure 8): a collector agent fills the buffer; a deep and a shallow learner train from it.

One ``decoupling``-topology run per collector depth trains both learners on
the same data at once (exactly the paper's setup: three networks in parallel),
so the 2×2 grid collector {deep, shallow} × learner {deep, shallow} takes two
runs per env and seed instead of four collector_*_learner_* runs.
"""

from __future__ import annotations

from deepcrl.configs.studies import Run, check_depths, seed_tag

DESCRIPTION = "Deep vs shallow train-only learners under a deep and a shallow collector."
# The paper uses three envs; which three is our assumption (the excerpt does not name them).
DEFAULT_ENVS = {
    "paper": ["ant_big_maze", "humanoid_u_maze", "arm_push_easy"],
    "cpu": ["point_mass_u4_maze", "point_mass_big_maze"],  # as depth_sweep's (docs/results.md)
}
# deep, shallow (DESIGN.md); at cpu scale the depth sweep's two depths.
DEFAULT_OPTIONS = {"paper": {"depths": [32, 4]}, "cpu": {"depths": [16, 4]}}
# 300k steps: every cell learns (docs/results.md G; 19–25 min per maze on 2 cores, 5 processes a run).
CPU_MAZE_RUN = {"total_env_steps": 300_000, "num_evals": 6}

CURVE_KEYS = ("collector_depth", "learner", "learner_depth")
FINAL_X, FINAL_LINES = None, ()  # the report draws the 2×2 grid instead
COVERAGE_BY = "collector_depth"


def get_runs(envs: list[str], seeds: list[int], scale: str, options: dict, base=None) -> list[Run]:
    depths = check_depths(options["depths"])
    if len(depths) != 2 or depths[0] == depths[1]:
        raise ValueError(f"decoupling takes --depths DEEP,SHALLOW (two different depths), got {depths}")
    deep, shallow = depths
    return [
        Run(
            f"{env}-collector_d{collector}-{seed_tag(seed)}",
            {
                "env": env,
                "seed": seed,
                "topology": "decoupling",
                "collector_depth": collector,
                "learner_depths": f"{deep},{shallow}",
            },
            {"env": env, "collector_depth": collector},
        )
        for env in envs
        for collector in (deep, shallow)
        for seed in seeds
    ]
