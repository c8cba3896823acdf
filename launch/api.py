"""The Python API (``import deepcrl``; docs/api.md): train a run, load one, evaluate it, use or export
its policy, read its metrics. One policy signature everywhere: ``act(obs, key) -> action`` (jittable;
``key`` is ignored by a deterministic policy and may be None).

    run = deepcrl.train(env="point_mass", total_env_steps=50_000)
    run.evaluate(num_episodes=64)["eval/success"]
    run.export("policy.deepcrl")  ->  deepcrl.load_policy("policy.deepcrl").evaluate(...)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization
from ml_collections import ConfigDict

from deepcrl.collector.rollout import evaluate as rollout_evaluate
from deepcrl.configs import budget
from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import env_named, resolve
from deepcrl.configs.presets import get_config as preset_config
from deepcrl.configs.validation import ConfigError
from deepcrl.envs.wrappers import VectorEnv
from deepcrl.launch.dispatch import run_experiment
from deepcrl.learner.agent import AgentConfig, make_agent
from deepcrl.learner.networks import TrunkConfig
from deepcrl.rundir.checkpoints import CheckpointError, restore_train_state, siblings
from deepcrl.rundir.checkpoints import resolve as resolve_checkpoint
from deepcrl.rundir.metrics import default_run_dir, read_metrics

Policy = Callable[[Any, Any], Any]  # act(obs [N, S+G], key) -> actions [N, A]
EXPORT_FORMAT = "deepcrl-policy-1"


class Run:
    """A run directory, seen through one of its learners (``single``: its one agent; a distributed run:
    the driving learner unless ``learner`` names another; K seeds: seed ``seed``'s agent)."""

    def __init__(self, run_dir: str | Path, learner: str | None = None, seed: int = 0):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            what = "is a file, not a run directory" if self.run_dir.exists() else "does not exist"
            raise CheckpointError(f"run directory {self.run_dir} {what}")
        if not (self.run_dir / "config.json").is_file():
            raise CheckpointError(f"{self.run_dir} holds no run (no config.json)")
        path = self.run_dir / "config.json"
        try:
            saved = json.loads(path.read_text())
            saved.pop("memory_estimate", None)  # a record, not a setting
            saved.update(num_devices=1, devices_per_learner=1)  # its policy acts on any machine
            self.config = get_config()  # today's defaults under the saved settings (older runs lack newer fields)
            self.config.update(saved)
            self.experiment = resolve(self.config)
        except (ValueError, TypeError, AttributeError) as e:  # ConfigError is a ValueError
            raise CheckpointError(f"{path} does not describe a run this deepcrl can load ({e})") from None
        names = list(self.experiment.agents)
        if learner is None:
            learner = names[0]
        if learner not in names:
            raise ValueError(f"{self.run_dir} has no learner {learner!r}; its learners: {', '.join(names)}")
        self.learner, self.seed = learner, int(seed)
        if not 0 <= self.seed < self.experiment.num_seeds:
            raise ValueError(f"seed {seed}: {self.run_dir} trained seeds 0..{self.experiment.num_seeds - 1}")
        self._agent = make_agent(self.experiment.agents[learner])
        self._actor = None

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r}, learner={self.learner!r})"

    @property
    def folder(self) -> Path:
        """Where this learner's metrics and checkpoints are."""
        if self.experiment.distributed:
            return self.run_dir / self.learner
        return self.run_dir / f"seed_{self.seed}" if self.experiment.num_seeds > 1 else self.run_dir

    @property
    def checkpoint(self) -> Path:
        """The checkpoint the policy comes from: ``final`` when the run finished, else ``latest``."""
        for name in ("final", "latest"):
            path = self.folder / "checkpoints" / name
            if resolve_checkpoint(path) is not None:
                return path
        raise CheckpointError(f"{self.folder} holds no checkpoint yet (one is saved after each epoch)")

    def metrics(self) -> dict[str, list]:
        """This learner's ``metrics.jsonl`` as columns (one list per field, ``None`` where a row lacks it)."""
        rows = read_metrics(self.folder / "metrics.jsonl")
        keys = list(dict.fromkeys(k for r in rows for k in r))
        return {k: [r.get(k) for r in rows] for k in keys}

    def actor_params(self) -> Any:
        """The actor's parameters of ``checkpoint``; if it is damaged, of the one before it, then of the
        folder's other checkpoints, newest first, with a ``warning:`` line. ``CheckpointError`` when
        none restores: never a policy that was not trained."""
        if self._actor is None:
            ckpt, target = self.checkpoint, self._agent.init(jax.random.PRNGKey(0))
            state = restore_train_state(ckpt, target, fallbacks=siblings(ckpt))
            self._actor = jax.device_get(state.actor)
        return self._actor

    def policy(self, deterministic: bool = True) -> Policy:
        """``act(obs, key)``: the trained actor's tanh(mean) (deterministic) or a tanh-Gaussian sample."""
        return _policy(self._agent, self.actor_params(), deterministic)

    def evaluate(self, num_episodes: int | None = None, env: str | None = None, seed: int = 0,
                 deterministic: bool = True) -> dict[str, float]:  # fmt: skip
        """One episode per env on ``num_episodes`` envs (default: the run's ``num_eval_envs``) of ``env``
        (default: the run's evaluation env): the metrics a training row's ``eval/`` fields hold."""
        name = env or str(self.config.get("eval_env", "") or self.config.env)
        n = int(num_episodes or self.config.num_eval_envs)
        return evaluate_policy(self.policy(deterministic), env_named(self.config, name), n,
                               self.experiment.layout.episode_length, seed)  # fmt: skip

    def export(self, path: str | Path) -> Path:
        """Write the policy as one self-contained file: the actor's parameters, its network, the
        observation layout and where it came from. ``load_policy(path)`` reads it without this run."""
        cfg, env = self._agent.config, self.experiment.env()
        meta = {
            "format": EXPORT_FORMAT, "env": str(self.config.env), "backend": str(self.config.backend or ""),
            "episode_length": self.experiment.layout.episode_length, "state_size": cfg.state_size,
            "goal_size": cfg.goal_size, "action_size": cfg.action_size, "goal_indices": list(env.spec.goal_indices),
            "actor": dataclasses.asdict(cfg.actor), "run_dir": str(self.run_dir.absolute()),
            "learner": self.learner, "seed": self.seed, "checkpoint": str(self.checkpoint),
        }  # fmt: skip
        blob = serialization.msgpack_serialize({"meta": json.dumps(meta), "actor": self.actor_params()})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
        return path


@dataclasses.dataclass
class ExportedPolicy:
    """A policy read back from ``Run.export``: ``act(obs, key)``, its metadata, and ``evaluate``."""

    meta: dict
    act: Policy

    def evaluate(self, num_episodes: int = 64, env: str | None = None, seed: int = 0) -> dict[str, float]:
        m = self.meta
        config = ConfigDict({"backend": m["backend"], "episode_length": m["episode_length"], "physics_timestep": 0.0})
        return evaluate_policy(self.act, env_named(config, env or m["env"]), num_episodes,
                               m["episode_length"], seed)  # fmt: skip


def load_policy(path: str | Path, deterministic: bool = True) -> ExportedPolicy:
    """A policy exported by ``Run.export`` (or ``launch/evaluate.py --export``); no run directory needed."""
    try:
        saved = serialization.msgpack_restore(Path(path).read_bytes())
        meta = json.loads(saved["meta"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not an exported deepcrl policy ({e})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is format {meta.get('format')!r}; this deepcrl reads {EXPORT_FORMAT}")
    cfg = AgentConfig(meta["state_size"], meta["goal_size"], meta["action_size"], actor=TrunkConfig(**meta["actor"]))
    return ExportedPolicy(meta, _policy(make_agent(cfg), saved["actor"], deterministic))


def load(run_dir: str | Path, learner: str | None = None, seed: int = 0) -> Run:
    """The run in ``run_dir`` (any topology), seen through ``learner`` (default: its driving one)."""
    return Run(run_dir, learner, seed)


def train(config: ConfigDict | str | None = None, run_dir: str | Path | None = None, progress: bool = False,
          **overrides: Any) -> Run:  # fmt: skip
    """Train a run to the end and return it. ``config``: a ConfigDict, a preset name (``"paper"``,
    ``"cpu"``) or None (the defaults); ``overrides``: any config field (``env="ant"``,
    ``topology="decoupling"``, ``critic_depth=16``). ``ValueError`` (one line) on a bad config."""
    if isinstance(config, ConfigDict):
        config = ConfigDict(config.to_dict())
    else:
        config = preset_config(config) if isinstance(config, str) else get_config()
    for key, value in overrides.items():
        if key not in config:
            raise ValueError(f"unknown config field {key!r}; see configs/defaults.py")
        config[key] = value
    run_dir = Path(run_dir) if run_dir else default_run_dir(str(config.env), str(config.topology))
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"{run_dir} holds files already; give a new run_dir (or load it: deepcrl.load)")
    config.run_dir = str(run_dir)
    try:
        experiment = resolve(config)
        experiment = dataclasses.replace(experiment, memory=budget.check(experiment))
    except ConfigError as e:
        raise ValueError(str(e)) from None
    run_experiment(experiment, run_dir, progress=progress)
    return Run(run_dir)


def evaluate_policy(act: Policy, env, num_episodes: int, episode_length: int, seed: int = 0) -> dict[str, float]:
    """``act`` for one episode on each of ``num_episodes`` copies of ``env``: ``eval/`` metrics."""
    venv = VectorEnv(env, int(num_episodes), episode_length)
    out = jax.jit(lambda key: rollout_evaluate(venv, act, key))(jax.random.PRNGKey(seed))
    return {f"eval/{k}": float(np.asarray(v)) for k, v in out.items()}


def _policy(agent, actor, deterministic: bool) -> Policy:
    def act(obs, key=None):
        return agent.act(actor, obs, key, deterministic=deterministic)

    return act


__all__ = ["ExportedPolicy", "Run", "evaluate_policy", "load", "load_policy", "train"]
