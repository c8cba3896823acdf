"""Loading a run's trained policy back (for rendering and inspection)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

from deepcrl.rundir.checkpoints import latest_checkpoint, restore_train_state


def load_policy(run_dir: Path) -> tuple[str, dict, Callable[[np.ndarray], np.ndarray]]:
    """(env name, env kwargs, deterministic act_fn) of a run's latest checkpoint."""
    from deepcrl.configs.resolve import agent_config, build_env
    from deepcrl.learner.agent import make_agent

    run_dir = Path(run_dir)
    ckpt = latest_checkpoint(run_dir)
    config_path = ckpt.parent.parent / "config.json"
    if not config_path.exists():
        config_path = run_dir / "config.json"
    config = ConfigDict(json.loads(config_path.read_text()))
    env = build_env(config)
    agent = make_agent(agent_config(config, env))
    ts = restore_train_state(ckpt, agent.init(jax.random.PRNGKey(0)))
    act = jax.jit(lambda obs: agent.act(ts.actor, obs, deterministic=True))
    kwargs = {}
    if config.backend:
        kwargs["backend"] = config.backend
    if config.episode_length:
        kwargs["episode_length"] = int(config.episode_length)
    return config.env, kwargs, act
