"""The paper's per-environment settings: ``--config configs/paper/envs.py:humanoid_u_maze``.

Every env starts from ``configs.presets.paper()`` — the paper code's run settings
(512 envs, unroll 62, batch 512, SGD steps by the reference's rule, Adam 3e-4,
γ 0.99, replay 10,000 steps per env, prefill 1,000 steps per env, 128 eval
envs, width 256, 100M env steps in 100 epochs, each env reset to its own first
start and goal) — and sets the env name, the episode length of 1000 and, for
the mazes with one, the far-goal evaluation layout (``eval_env``), as the
paper's job.slurm did. Depth stays at train.py's default of 4: the paper sweeps
it (``--critic_depth/--actor_depth`` or the ``depth_sweep`` study; its shipped
scripts used 16 for humanoid and 8 for ant_big_maze). docs/fidelity.md lists
every setting against the paper's code.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from deepcrl.configs.presets import paper
from deepcrl.envs import EVAL_ENVS

# The ten headline environments of the paper (DESIGN.md), in its order.
HEADLINE_ENVS = (
    "ant_big_maze", "ant_u4_maze", "ant_u5_maze", "ant_hardest_maze", "arm_push_easy", "arm_push_hard",
    "arm_binpick_hard", "humanoid", "humanoid_u_maze", "humanoid_big_maze",
)  # fmt: skip

EPISODE_LENGTH = 1000  # DESIGN.md
STEPS_100M = 100_000_000  # train.py's default and both shipped scripts

# env → total env steps.
TOTAL_ENV_STEPS: dict[str, int] = {
    "ant": STEPS_100M,
    "ant_u4_maze": STEPS_100M,
    "ant_u5_maze": STEPS_100M,
    "ant_big_maze": STEPS_100M,
    "ant_hardest_maze": STEPS_100M,
    "arm_push_easy": STEPS_100M,
    "arm_push_hard": STEPS_100M,
    "arm_binpick_easy": STEPS_100M,
    "arm_binpick_hard": STEPS_100M,
    "humanoid": STEPS_100M,
    "humanoid_u_maze": STEPS_100M,
    "humanoid_big_maze": STEPS_100M,
}

PAPER_ENVS = tuple(TOTAL_ENV_STEPS)


def get_config(env_name: str = "") -> ConfigDict:
    """The paper preset for ``env_name``; an unknown name raises a ValueError listing the valid ones."""
    if env_name not in TOTAL_ENV_STEPS:
        what = (
            f"unknown paper env {env_name!r}" if env_name else "no env given (use configs/paper/envs.py:ENV)"
        )
        raise ValueError(f"{what}; valid: {', '.join(PAPER_ENVS)}")
    c = paper()
    c.env = env_name
    c.episode_length = EPISODE_LENGTH
    c.total_env_steps = TOTAL_ENV_STEPS[env_name]
    # Evaluate mazes on their far-goal layout, as the paper's job.slurm did (ant_big_maze →
    # ant_big_maze_eval); ant_hardest_maze has no eval layout and evaluates on itself.
    c.eval_env = EVAL_ENVS.get(env_name, "")
    return c
