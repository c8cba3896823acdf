"""Orbax checkpoints of the agent, and loading a run's policy back for rendering."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from ml_collections import ConfigDict


def save_train_state(path: Path, train_state) -> Path:
    path = Path(path).absolute()
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, jax.device_get(train_state), force=True)
    ckptr.wait_until_finished()
    return path


def restore_train_state(path: Path, target):
    ckptr = ocp.StandardCheckpointer()
    return ckptr.restore(Path(path).absolute(), target=jax.device_get(target))


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint folder under ``run_dir`` (searched recursively)."""
    candidates = sorted(Path(run_dir).glob("**/checkpoints/*"), key=lambda p: p.stat().st_mtime)
    candidates = [p for p in candidates if p.is_dir()]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint under {run_dir}")
    return candidates[-1]


def load_policy(run_dir: Path) -> tuple[str, dict, Callable[[np.ndarray], np.ndarray]]:
    """(env name, env kwargs, deterministic act_fn) of a run's latest checkpoint."""
    from configs.resolve import agent_config, build_env
    from learner.agent import make_agent

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
