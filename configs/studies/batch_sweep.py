"""Batch-size sweep (the paper's batch-size scaling): 256 … 4096 at a shallow and a deep network.

The paper reports that larger batches help deep networks more than shallow
ones; the deep/shallow depths (4 and 64) are our assumption of which pair to
compare, changeable with ``--depths``.
"""

from __future__ import annotations

from deepcrl.configs.studies import Run, check_depths, seed_tag

DESCRIPTION = "Final success vs batch size at a shallow and a deep network."
# Assumed envs (the excerpt does not name the batch-size figure's envs).
DEFAULT_ENVS = {"paper": ["ant_big_maze", "humanoid_u_maze", "arm_push_easy"], "cpu": ["point_mass_walls"]}
DEFAULT_OPTIONS = {
    "paper": {"depths": [4, 64], "batch_sizes": [256, 512, 1024, 2048, 4096]},
    "cpu": {"depths": [4, 16], "batch_sizes": [256, 512, 1024, 2048, 4096]},
}

CURVE_KEYS = ("depth", "batch_size")
FINAL_X, FINAL_LINES = "batch_size", ("depth",)
COVERAGE_BY = None


def get_runs(envs: list[str], seeds: list[int], scale: str, options: dict, base=None) -> list[Run]:
    depths = check_depths(options["depths"])
    batches = [int(b) for b in options["batch_sizes"]]
    if any(b <= 0 for b in batches):
        raise ValueError(f"batch sizes must be positive, got {batches}")
    return [
        Run(
            f"{env}-d{depth}-b{batch}-{seed_tag(seed)}",
            {"env": env, "seed": seed, "critic_depth": depth, "actor_depth": depth, "batch_size": batch},
            {"env": env, "depth": depth, "batch_size": batch},
        )
        for env in envs
        for depth in depths
        for batch in batches
        for seed in seeds
    ]
