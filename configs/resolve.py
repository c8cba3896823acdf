"""Config → env, networks and derived sizes, with one-line validation errors.

Every runtime builds its env and agent through here, so a bad config fails the
same way (a ``ConfigError`` naming the valid choices) whatever the topology.
"""

from __future__ import annotations

import dataclasses
import math

from ml_collections import ConfigDict

from deepcrl import envs
from deepcrl.configs.defaults import TOPOLOGIES
from deepcrl.envs.base import GoalEnv
from deepcrl.learner.agent import AgentConfig
from deepcrl.learner.networks import TrunkConfig, validate_trunk

EPOCH_RULES = ("cover", "reference")


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is one line."""


def apply_override(config: ConfigDict, item: str) -> None:
    """Apply one ``key=value`` override (``--set``), converting to the field's type."""
    key, sep, raw = item.partition("=")
    if not sep or key not in config:
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


def build_env(config: ConfigDict, name: str | None = None) -> GoalEnv:
    """The training env (or the env ``name``) with the config's backend, episode length and timestep."""
    name = name or config.env
    kwargs = {}
    if config.backend:
        kwargs["backend"] = config.backend
    if config.episode_length:
        kwargs["episode_length"] = int(config.episode_length)
    if float(config.get("physics_timestep", 0.0)):
        kwargs["physics_timestep"] = float(config.physics_timestep)
    try:
        return envs.make_env(name, **kwargs)
    except TypeError as e:
        if "physics_timestep" in str(e):
            raise ConfigError(
                f"physics_timestep is not supported by env {name!r} (ant and humanoid families only)"
            ) from None
        raise ConfigError(str(e)) from None
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_eval_env(config: ConfigDict, env: GoalEnv) -> GoalEnv:
    """The env evaluations run on: ``config.eval_env``, or the training ``env`` itself.

    An eval env must share the training env's observation layout (state size,
    goal indices, action size), so one policy and one critic fit both.
    """
    name = str(config.get("eval_env", "") or "")
    if not name or name == config.env:
        return env
    eval_env = build_env(config, name)
    mine = (env.spec.state_size, tuple(env.spec.goal_indices), int(env.action_size))
    theirs = (eval_env.spec.state_size, tuple(eval_env.spec.goal_indices), int(eval_env.action_size))
    if mine != theirs:
        family = config.env.split("_")[0]
        same = [n for n in envs.env_names() if n != config.env and n.split("_")[0] == family]
        raise ConfigError(
            f"eval_env {name!r} does not match env {config.env!r}: (state size, goal indices, action size) "
            f"{theirs} vs {mine}; use an env of the same family: {', '.join(same) or 'none'}"
        )
    return eval_env


def make_train_venv(config: ConfigDict, env: GoalEnv, layout: Layout):
    """The batched training envs, with the config's reset rule."""
    from deepcrl.envs.wrappers import VectorEnv

    first = bool(config.get("reset_to_first_start", False))
    return VectorEnv(env, config.num_envs, layout.episode_length, reset_to_first_start=first)


def make_eval_venv(config: ConfigDict, env: GoalEnv, layout: Layout):
    """The batched evaluation envs: ``num_eval_envs`` copies of the eval env (one episode each)."""
    from deepcrl.envs.wrappers import VectorEnv

    return VectorEnv(build_eval_env(config, env), config.num_eval_envs, layout.episode_length)


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
    def total_env_steps(self) -> int:
        return (
            self.prefill_env_steps + self.num_epochs * self.collections_per_epoch * self.steps_per_collection
        )


def validate(config: ConfigDict, env: GoalEnv | None = None) -> Layout:
    """Check every field a user can get wrong; return the derived layout."""
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
    for name in ("segment_length", "episode_length"):
        if int(config[name]) < 0:
            raise ConfigError(f"{name} must be >= 0 (0 means the env's default), got {config[name]}")
    if not 0.0 < float(config.gamma) < 1.0:
        raise ConfigError(f"gamma must lie in (0, 1), got {config.gamma}")
    for role in ("actor", "critic"):
        try:
            validate_trunk(trunk_config(config, role), role)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    env = env or build_env(config)
    if config.get("eval_env", ""):
        build_eval_env(config, env)  # an unknown or mismatched eval env fails here, in one line
    episode_length = int(config.episode_length or env.spec.episode_length)
    # By default a segment spans an episode, but never more than the prefill, so sampling can start.
    segment_length = int(config.segment_length or min(episode_length, config.min_replay_steps_per_env))
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
    if int(config.num_minibatches) == 0:  # resolved in place, so every role and config.json agree
        config.num_minibatches = reference_sgd_steps(config.num_envs, episode_length, config.batch_size)
        if config.num_minibatches < 1:
            raise ConfigError(
                f"the paper's SGD-step rule gives 0 steps: num_envs·(episode_length−1) = "
                f"{config.num_envs * (episode_length - 1)} < batch_size {config.batch_size}; set num_minibatches"
            )
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
    return Layout(
        episode_length=episode_length,
        segment_length=segment_length,
        steps_per_collection=steps_per_collection,
        prefill_unrolls=prefill_unrolls,
        collections_per_epoch=collections_per_epoch,
        num_epochs=num_epochs,
    )


def reference_sgd_steps(num_envs: int, episode_length: int, batch_size: int, cap: int = 800) -> int:
    """SGD steps per collection step as the paper's code takes them.

    It samples one episode window per env, relabels its ``episode_length − 1``
    transitions, cuts them into full batches and trains on at most ``cap`` of
    them: 800 at batch 256 or 512, 499 at 1024, 124 at 4096 (512 envs, 1000 steps).
    """
    return min(cap, num_envs * (episode_length - 1) // batch_size)


def segments_per_round(config: ConfigDict, layout: Layout) -> int:
    """Segments a learner samples per round of ``num_minibatches`` SGD steps."""
    from deepcrl.buffer.relabel import segments_needed

    return segments_needed(config.num_minibatches * config.batch_size, layout.segment_length)


def replay_spec(config: ConfigDict, env: GoalEnv, layout: Layout, table_names: list[str]):
    """The Reverb tables of a distributed run: one per learner, sized in steps.

    With ``rate_limit='ratio'`` each table's sample-to-insert ratio (in segments)
    reproduces the update-to-data ratio of ``single``: one round of updates per
    ``num_envs × unroll_length`` env steps collected.
    """
    from deepcrl.buffer.reverb_replay import ReplaySpec, TableSpec

    if config.rate_limit not in ("ratio", "unlimited"):
        raise ConfigError(f"unknown rate_limit {config.rate_limit!r}; valid: ratio, unlimited")
    seg_len = layout.segment_length
    per_round = segments_per_round(config, layout)
    spi = error_buffer = None
    if config.rate_limit == "ratio":
        inserted_per_round = config.num_envs * config.unroll_length / seg_len
        spi = float(config.samples_per_insert) or per_round / inserted_per_round
        # Room for one whole collector write (N segments) and a few prefetched learner rounds.
        error_buffer = spi * config.num_envs + 4 * per_round
    return ReplaySpec(
        tables=tuple(TableSpec(n, spi, error_buffer) for n in table_names),
        capacity_steps=config.replay_steps_per_env * config.num_envs,
        segment_length=seg_len,
        state_size=env.spec.state_size,
        action_size=env.action_size,
        min_size_steps=config.min_replay_steps_per_env * config.num_envs,
    )
