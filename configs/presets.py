"""Named presets, selected with ``--config configs/presets.py:NAME``."""

from __future__ import annotations

from ml_collections import ConfigDict

from deepcrl.configs.defaults import get_config as default_config


def paper() -> ConfigDict:
    """The paper code's run settings (GPU-sized), as its shipped scripts ran them (docs/fidelity.md).

    512 envs, unroll 62, batch 512 (both shipped scripts; 256 is only train.py's default), 100M env
    steps in 100 epochs computed as the reference does, SGD steps per collection step by its rule
    (800 at batch 256/512, 499 at 1024, 124 at 4096), width 256, actor capped at 512 layers.
    """
    c = default_config()
    c.env = "ant"
    c.total_env_steps = 100_000_000
    c.num_envs = 512
    c.num_eval_envs = 128
    c.unroll_length = 62
    c.replay_steps_per_env = 10_000
    c.min_replay_steps_per_env = 1_000
    c.segment_length = 0
    c.batch_size = 512
    c.num_minibatches = 0  # the reference's rule (see configs/defaults.py)
    c.critic_width = 256
    c.actor_width = 256
    c.max_actor_depth = 512
    c.num_evals = 100
    c.epoch_rule = "reference"
    c.reset_to_first_start = True  # the paper's auto-reset: each env keeps its first start and goal
    return c


def cpu() -> ConfigDict:
    """Small settings that learn point-mass reaching on two CPU cores in minutes."""
    return default_config()


PRESETS = {"paper": paper, "cpu": cpu, "default": default_config}


def get_config(name: str = "default") -> ConfigDict:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]()
