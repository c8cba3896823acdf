"""Checks of a config, with one-line errors, and the sizes derived from it.

``configs/experiment.resolve`` runs these once per run, so a bad config fails the
same way (a ``ConfigError`` naming the valid choices) whatever the topology.
Nothing here modifies the config it checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

from ml_collections import ConfigDict

from deepcrl import envs
from deepcrl.configs.defaults import TOPOLOGIES
from deepcrl.envs.base import GoalEnv
from deepcrl.learner import devices
from deepcrl.learner.agent import AgentConfig
from deepcrl.learner.networks import TrunkConfig, validate_trunk

EPOCH_RULES = ("cover", "reference")


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is one line."""


def apply_override(config: ConfigDict, item: str) -> None:
    """Apply one ``key=value`` override (``--set``), converting to the field's type."""
    key, sep, raw = item.partition("=")
    if not sep or key not in config:
        close = difflib.get_close_matches(key, list(config), n=3, cutoff=0.75) if sep else []
        if close:
            raise ConfigError(f"bad --set {item!r}: no field {key!r}; did you mean {' or '.join(close)}?")
        raise ConfigError(
            f"bad --set {item!r}: expected key=value with key one of: {', '.join(sorted(config))}"
        )
    old = config[key]
    if isinstance(old, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"bad --set {item!r}: {key} expects true or false")
        config[key] = raw.lower() in ("true", "1")
        return
    try:
        config[key] = type(old)(raw)
    except ValueError:
        raise ConfigError(f"bad --set {item!r}: {key} expects a {type(old).__name__}") from None


def trunk_config(config: ConfigDict, role: str) -> TrunkConfig:
    """``role`` is 'actor' or 'critic'; depth/width come from ``{role}_depth``/``{role}_width``."""
    return TrunkConfig(
        depth=int(config[f"{role}_depth"]),
        width=int(config[f"{role}_width"]),
        residual=bool(config.residual),
        layer_norm=bool(config.layer_norm),
        activation=str(config.activation),
        scan=bool(config.scan_blocks),
        remat=bool(config.remat),
        compute_dtype=str(config.compute_dtype),
    )


def agent_config(config: ConfigDict, env: GoalEnv, actor=None, critic=None) -> AgentConfig:
    actor = actor or trunk_config(config, "actor")
    cap = int(config.get("max_actor_depth", 0))
    if cap and actor.depth > cap:  # the paper's 1024-layer runs kept a 512-layer actor
        actor = dataclasses.replace(actor, depth=cap)
    return AgentConfig(
        state_size=env.spec.state_size,
        goal_size=env.spec.goal_size,
        action_size=env.action_size,
        actor=actor,
        critic=critic or trunk_config(config, "critic"),
        repr_dim=int(config.repr_dim),
        actor_lr=float(config.actor_lr),
        critic_lr=float(config.critic_lr),
        alpha_lr=float(config.alpha_lr),
        logsumexp_penalty=float(config.logsumexp_penalty),
        target_entropy_scale=float(config.target_entropy_scale),
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """Sizes derived from the config and the env, shared by all runtimes."""

    episode_length: int
    segment_length: int
    steps_per_collection: int  # env steps of one collection step (all envs)
    prefill_unrolls: int
    collections_per_epoch: int
    num_epochs: int

    @property
    def prefill_env_steps(self) -> int:
        return self.prefill_unrolls * self.steps_per_collection

    @property
    def collections(self) -> int:
        """Collection steps after the prefill: one round of ``num_minibatches`` updates each."""
        return self.num_epochs * self.collections_per_epoch

    @property
    def total_env_steps(self) -> int:
        """The env steps a run really makes (whole epochs): what ``single`` collects, where a
        distributed collector stops, and the last row of every learner."""
        return self.prefill_env_steps + self.collections * self.steps_per_collection


def check(config: ConfigDict, env: GoalEnv, eval_env: GoalEnv) -> Layout:
    """Check every field a user can get wrong; return the derived layout (``config`` is not changed)."""
    check_fields(config)
    check_eval_env(config, env, eval_env)
    episode_length = int(config.episode_length or env.spec.episode_length)
    # By default a segment spans an episode, but never more than the prefill, so sampling can start.
    segment_length = int(config.segment_length or min(episode_length, config.min_replay_steps_per_env))
    check_sizes(config, episode_length, segment_length)
    return Layout(episode_length, segment_length, *_epochs(config))


def check_fields(config: ConfigDict) -> None:
    """Each field on its own: names among the valid ones, counts positive, shapes buildable."""
    if config.topology not in TOPOLOGIES:
        raise ConfigError(f"unknown topology {config.topology!r}; valid topologies: {', '.join(TOPOLOGIES)}")
    positive = [
        "total_env_steps", "num_envs", "num_eval_envs", "unroll_length", "replay_steps_per_env",
        "min_replay_steps_per_env", "batch_size", "num_evals", "repr_dim",
    ]  # fmt: skip
    for name in positive:
        if int(config[name]) <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {config[name]}")
    if int(config.num_minibatches) < 0:
        raise ConfigError(
            f"num_minibatches must be >= 0 (0: the paper code's rule), got {config.num_minibatches}"
        )
    if int(config.get("max_actor_depth", 0)) < 0 or int(config.get("max_actor_depth", 0)) % 4:
        raise ConfigError(f"max_actor_depth must be 0 (no cap) or a positive multiple of 4, got {config.max_actor_depth}")
    if config.get("epoch_rule", "cover") not in EPOCH_RULES:
        raise ConfigError(f"unknown epoch_rule {config.epoch_rule!r}; valid: {', '.join(EPOCH_RULES)}")
    num_seeds = config.get("num_seeds", 1)
    if int(num_seeds) <= 0:
        raise ConfigError(f"num_seeds must be a positive integer, got {num_seeds}")
    if int(num_seeds) > 1 and config.topology != "single":
        raise ConfigError(
            f"num_seeds > 1 runs only with topology single, not {config.topology}; run one seed per run"
        )
    check_devices(config)
    for name in ("segment_length", "episode_length"):
        if int(config[name]) < 0:
            raise ConfigError(f"{name} must be >= 0 (0 means the env's default), got {config[name]}")
    for name in ("actor_lr", "critic_lr", "alpha_lr"):  # at 0 the run would train nothing, silently
        if not 0.0 < float(config[name]) < math.inf:
            raise ConfigError(f"{name} must be a positive learning rate, got {config[name]}")
    if not 0.0 < float(config.gamma) < 1.0:
        raise ConfigError(f"gamma must lie in (0, 1), got {config.gamma}")
    for role in ("actor", "critic"):
        try:
            validate_trunk(trunk_config(config, role), role)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def check_devices(config: ConfigDict) -> None:
    """``num_devices`` exists here and divides what it splits: one seed's envs and batch, or K seeds."""
    try:
        n = devices.count(config.get("num_devices", 1))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    per_learner = int(config.get("devices_per_learner", 1))
    if per_learner < 1:
        raise ConfigError(f"devices_per_learner must be >= 1, got {per_learner}")
    if per_learner > 1:
        if config.topology == "single":
            raise ConfigError("devices_per_learner is for distributed topologies; single spreads with --devices")
        if int(config.batch_size) % per_learner:
            raise ConfigError(f"batch_size={config.batch_size} must be a multiple of devices_per_learner={per_learner}")
        gpus = float(config.get("gpus_per_learner", 0.0))
        if 0 < gpus < per_learner:
            raise ConfigError(f"devices_per_learner={per_learner} needs --gpus_per_learner {per_learner} (Ray GPUs "
                              f"of the learner's node), got {gpus:g}")  # fmt: skip
    if n == 1:
        return
    if config.topology != "single":
        raise ConfigError(f"num_devices > 1 runs only with topology single, not {config.topology} "
                          "(a distributed learner spreads with --set devices_per_learner=N)")  # fmt: skip
    k = int(config.get("num_seeds", 1))
    if k > 1:
        if k % n:
            raise ConfigError(f"num_seeds={k} must be a multiple of num_devices={n} (K/N seeds per device)")
        return
    for name in ("num_envs", "batch_size"):
        if int(config[name]) % n:
            raise ConfigError(f"{name}={config[name]} must be a multiple of num_devices={n} (split over the devices)")


def check_sizes(config: ConfigDict, episode_length: int, segment_length: int) -> None:
    """Sizes against each other: segments, prefill, replay capacity, batch and SGD steps."""
    if segment_length < 2:
        raise ConfigError(f"segment_length must be at least 2 steps, got {segment_length}")
    if config.min_replay_steps_per_env > config.replay_steps_per_env:
        raise ConfigError(
            f"min_replay_steps_per_env ({config.min_replay_steps_per_env}) exceeds the replay capacity "
            f"replay_steps_per_env ({config.replay_steps_per_env})"
        )
    if segment_length > config.min_replay_steps_per_env:
        raise ConfigError(
            f"segment_length ({segment_length}) is longer than the prefilled data "
            f"(min_replay_steps_per_env={config.min_replay_steps_per_env}); raise the prefill or shorten segments"
        )
    if config.unroll_length > config.replay_steps_per_env:
        raise ConfigError(
            f"unroll_length ({config.unroll_length}) exceeds the replay capacity ({config.replay_steps_per_env})"
        )
    available = config.num_envs * config.min_replay_steps_per_env
    if config.batch_size > available:
        raise ConfigError(
            f"batch_size ({config.batch_size}) is larger than the data available when training starts "
            f"(num_envs x min_replay_steps_per_env = {available})"
        )
    if resolved_minibatches(config, episode_length) < 1:
        raise ConfigError(
            f"the paper's SGD-step rule gives 0 steps: num_envs·(episode_length−1) = "
            f"{config.num_envs * (episode_length - 1)} < batch_size {config.batch_size}; set num_minibatches"
        )


def _epochs(config: ConfigDict) -> tuple[int, int, int, int]:
    """(steps_per_collection, prefill_unrolls, collections_per_epoch, num_epochs) by the epoch rule."""
    steps_per_collection = config.num_envs * config.unroll_length
    prefill_unrolls = math.ceil(config.min_replay_steps_per_env / config.unroll_length)
    if config.get("epoch_rule", "cover") == "reference":
        num_epochs = int(config.num_evals)
        per_epoch = (config.total_env_steps - config.min_replay_steps_per_env * config.num_envs) // (
            num_epochs * steps_per_collection
        )
        if per_epoch < 1:
            raise ConfigError(
                f"epoch_rule reference: total_env_steps {config.total_env_steps:,} leaves no collection step "
                f"per epoch for {num_epochs} epochs of {steps_per_collection:,} env steps; lower num_evals"
            )
        collections_per_epoch = int(per_epoch)
    else:
        remaining = max(config.total_env_steps - prefill_unrolls * steps_per_collection, steps_per_collection)
        collections = math.ceil(remaining / steps_per_collection)
        num_epochs = min(int(config.num_evals), collections)
        collections_per_epoch = math.ceil(collections / num_epochs)
    return steps_per_collection, prefill_unrolls, collections_per_epoch, num_epochs


def resolved_minibatches(config: ConfigDict, episode_length: int) -> int:
    """SGD steps per collection step: ``num_minibatches``, or with 0 the paper code's rule."""
    if int(config.num_minibatches):
        return int(config.num_minibatches)
    return reference_sgd_steps(int(config.num_envs), episode_length, int(config.batch_size))


def check_eval_env(config: ConfigDict, env: GoalEnv, eval_env: GoalEnv) -> None:
    """An eval env must share the training env's observation layout (state size, goal indices,
    action size), so one policy and one critic fit both."""
    mine = (env.spec.state_size, tuple(env.spec.goal_indices), int(env.action_size))
    theirs = (eval_env.spec.state_size, tuple(eval_env.spec.goal_indices), int(eval_env.action_size))
    if mine != theirs:
        family = config.env.split("_")[0]
        same = [n for n in envs.env_names() if n != config.env and n.split("_")[0] == family]
        raise ConfigError(
            f"eval_env {config.eval_env!r} does not match env {config.env!r}: (state size, goal indices, "
            f"action size) {theirs} vs {mine}; use an env of the same family: {', '.join(same) or 'none'}"
        )


def reference_sgd_steps(num_envs: int, episode_length: int, batch_size: int, cap: int = 800) -> int:
    """SGD steps per collection step as the paper's code takes them.

    It samples one episode window per env, relabels its ``episode_length − 1``
    transitions, cuts them into full batches and trains on at most ``cap`` of
    them: 800 at batch 256 or 512, 499 at 1024, 124 at 4096 (512 envs, 1000 steps).
    """
    return min(cap, num_envs * (episode_length - 1) // batch_size)
