"""Loading a run's trained policy back (for rendering and inspection)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

from deepcrl.configs.experiment import resolve
from deepcrl.configs.validation import ConfigError
from deepcrl.learner.agent import make_agent
from deepcrl.rundir.checkpoints import CheckpointError, latest_checkpoint, previous, restore_train_state


def load_policy(run_dir: Path) -> tuple[str, dict, Callable[[np.ndarray], np.ndarray]]:
    """(env name, env kwargs, deterministic act_fn) of a run's latest checkpoint.

    A damaged checkpoint falls back to the one before it (``NAME.old``), then to the other
    checkpoints of its folder, newest first, with one ``warning:`` line. ``CheckpointError`` (one
    line) when ``run_dir`` holds no run (no directory, no ``config.json``), no checkpoint, or none
    that restores: never a policy that was not trained.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "does not exist"
        raise CheckpointError(f"run directory {run_dir} {what}")
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} holds no run (no config.json)")
    try:
        ckpt = latest_checkpoint(run_dir)
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir} holds no checkpoint yet (one is saved after each epoch)") from None
    config_path = ckpt.parent.parent / "config.json"
    if not config_path.exists():
        config_path = run_dir / "config.json"
    try:
        config = ConfigDict(json.loads(config_path.read_text()))
    except ValueError as e:
        raise CheckpointError(f"{config_path} does not parse ({e})") from None
    try:
        experiment = resolve(config)
    except ConfigError as e:
        raise CheckpointError(f"{config_path}: {e}") from None
    role = ckpt.parent.parent.name  # a distributed run's learner, by its folder; else the run's one agent
    agent = make_agent(experiment.agents.get(role, experiment.agent))
    others = [p for p in ckpt.parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    others = sorted(set(others) - {ckpt, previous(ckpt)}, key=lambda p: p.stat().st_mtime, reverse=True)
    ts = restore_train_state(ckpt, agent.init(jax.random.PRNGKey(0)), fallbacks=others)
    act = jax.jit(lambda obs: agent.act(ts.actor, obs, deterministic=True))
    kwargs = {}
    if config.backend:
        kwargs["backend"] = config.backend
    if config.episode_length:
        kwargs["episode_length"] = int(config.episode_length)
    return config.env, kwargs, act
