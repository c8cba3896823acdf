"""Named presets, selected with ``--config configs/presets.py:NAME``."""

from __future__ import annotations

from ml_collections import ConfigDict

from deepcrl.configs.defaults import get_config as default_config


def paper() -> ConfigDict:
    """The paper's defaults (GPU-sized): 512 envs, width 256, 800 minibatches per 31,744 steps."""
    c = default_config()
    c.env = "ant"
    c.total_env_steps = 50_000_000
    c.num_envs = 512
    c.num_eval_envs = 128
    c.unroll_length = 62
    c.replay_steps_per_env = 10_000
    c.min_replay_steps_per_env = 1_000
    c.segment_length = 0
    c.batch_size = 256
    c.num_minibatches = 800
    c.critic_width = 256
    c.actor_width = 256
    c.num_evals = 50
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
