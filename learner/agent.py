"""The CRL agent as pure functions: init, one SGD update, many updates, act.

Every runtime (the fused ``single`` loop, the distributed learner) calls these
same functions; only where the batches come from differs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from deepcrl.learner.losses import energy, energy_matrix, infonce_loss, tanh_gaussian_sample
from deepcrl.learner.networks import Actor, Encoder, TrunkConfig

Batch = dict[str, jax.Array]  # state [B, S], action [B, A], goal [B, G]


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    state_size: int
    goal_size: int
    action_size: int
    actor: TrunkConfig = TrunkConfig()
    critic: TrunkConfig = TrunkConfig()
    repr_dim: int = 64
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    logsumexp_penalty: float = 0.1
    target_entropy_scale: float = -0.5  # target entropy = scale · |A|


@struct.dataclass
class TrainState:
    actor: Any
    critic: Any  # {"sa": φ params, "g": ψ params}
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    step: jax.Array


class Agent(NamedTuple):
    config: AgentConfig
    init: Callable[[jax.Array], TrainState]
    update: Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]
    update_many: Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]
    act: Callable[..., jax.Array]
    critic_repr: Callable[[Any, Batch], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What ``make_agent`` builds once from an ``AgentConfig``: the networks and the optimisers."""

    cfg: AgentConfig
    actor_net: Actor
    sa_net: Encoder
    g_net: Encoder
    actor_tx: optax.GradientTransformation
    critic_tx: optax.GradientTransformation
    alpha_tx: optax.GradientTransformation
    target_entropy: float


def _build_parts(cfg: AgentConfig) -> _Parts:
    return _Parts(
        cfg=cfg,
        actor_net=Actor(cfg.actor, cfg.action_size),
        sa_net=Encoder(cfg.critic, cfg.repr_dim),
        g_net=Encoder(cfg.critic, cfg.repr_dim),
        actor_tx=optax.adam(cfg.actor_lr),
        critic_tx=optax.adam(cfg.critic_lr),
        alpha_tx=optax.adam(cfg.alpha_lr),
        target_entropy=cfg.target_entropy_scale * cfg.action_size,
    )


def _init_state(p: _Parts, key: jax.Array) -> TrainState:
    cfg = p.cfg
    k_actor, k_sa, k_g = jax.random.split(key, 3)
    actor = p.actor_net.init(k_actor, jnp.zeros((1, cfg.state_size + cfg.goal_size)))
    critic = {
        "sa": p.sa_net.init(k_sa, jnp.zeros((1, cfg.state_size + cfg.action_size))),
        "g": p.g_net.init(k_g, jnp.zeros((1, cfg.goal_size))),
    }
    log_alpha = jnp.zeros(())
    return TrainState(
        actor=actor,
        critic=critic,
        log_alpha=log_alpha,
        actor_opt=p.actor_tx.init(actor),
        critic_opt=p.critic_tx.init(critic),
        alpha_opt=p.alpha_tx.init(log_alpha),
        step=jnp.zeros((), jnp.int32),
    )


def _critic_repr(p: _Parts, critic, state, action, goal):
    phi = p.sa_net.apply(critic["sa"], jnp.concatenate([state, action], axis=-1))
    psi = p.g_net.apply(critic["g"], goal)
    return phi, psi


def _sample_action(p: _Parts, actor, obs, key):
    mean, log_std = p.actor_net.apply(actor, obs)
    return tanh_gaussian_sample(key, mean, log_std)


def _actor_step(p: _Parts, ts: TrainState, state, obs, psi, key):
    """The actor's loss and Adam step on one fresh sample, against the critic before this step."""

    def actor_loss(actor):
        action, log_prob = _sample_action(p, actor, obs, key)
        phi = p.sa_net.apply(ts.critic["sa"], jnp.concatenate([state, action], axis=-1))
        f = energy(phi, psi)
        loss = jnp.mean(jnp.exp(ts.log_alpha) * log_prob - f)
        return loss, (log_prob, f)

    (p_loss, (log_prob, f)), p_grad = jax.value_and_grad(actor_loss, has_aux=True)(ts.actor)
    p_upd, actor_opt = p.actor_tx.update(p_grad, ts.actor_opt)
    actor = optax.apply_updates(ts.actor, p_upd)
    return actor, actor_opt, p_grad, p_loss, log_prob, f


def _alpha_step(p: _Parts, ts: TrainState, log_prob):
    """α's loss and Adam step on the actor's own sample, as in the paper's code."""

    def alpha_loss(log_alpha):
        return jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(-log_prob - p.target_entropy))

    a_loss, a_grad = jax.value_and_grad(alpha_loss)(ts.log_alpha)
    a_upd, alpha_opt = p.alpha_tx.update(a_grad, ts.alpha_opt)
    log_alpha = optax.apply_updates(ts.log_alpha, a_upd)
    return log_alpha, alpha_opt, a_loss


def _critic_step(p: _Parts, ts: TrainState, batch: Batch, psi, psi_vjp):
    """The critic's InfoNCE loss and Adam step; ψ's gradient goes back through ``psi_vjp``."""
    state = batch["state"]

    def critic_loss(sa, psi):
        phi = p.sa_net.apply(sa, jnp.concatenate([state, batch["action"]], axis=-1))
        return infonce_loss(energy_matrix(phi, psi), p.cfg.logsumexp_penalty)

    (c_loss, c_metrics), (sa_grad, psi_grad) = jax.value_and_grad(critic_loss, (0, 1), has_aux=True)(
        ts.critic["sa"], psi
    )
    c_grad = {"sa": sa_grad, "g": psi_vjp(psi_grad)[0]}
    c_upd, critic_opt = p.critic_tx.update(c_grad, ts.critic_opt)
    critic = optax.apply_updates(ts.critic, c_upd)
    return critic, critic_opt, c_grad, c_loss, c_metrics


def _update(p: _Parts, ts: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, dict]:
    """One SGD step in the paper's order: actor and α from one actor sample, then the critic.

    The actor and the critic both see the critic as it was before this step (as in the paper's
    code), so ψ(g) is computed once and serves as the actor's target and the critic's input;
    the critic's gradient for ψ's parameters goes back through that same forward pass.
    """
    state, goal = batch["state"], batch["goal"]
    obs = jnp.concatenate([state, goal], axis=-1)
    psi, psi_vjp = jax.vjp(lambda g: p.g_net.apply(g, goal), ts.critic["g"])
    actor, actor_opt, p_grad, p_loss, log_prob, f = _actor_step(p, ts, state, obs, psi, key)
    log_alpha, alpha_opt, a_loss = _alpha_step(p, ts, log_prob)
    critic, critic_opt, c_grad, c_loss, c_metrics = _critic_step(p, ts, batch, psi, psi_vjp)
    metrics = {
        **c_metrics,
        "actor/loss": p_loss,
        "actor/entropy": -log_prob.mean(),
        "actor/energy": f.mean(),
        "critic/loss": c_loss,
        "alpha/loss": a_loss,
        "alpha/value": jnp.exp(log_alpha),
        "critic/grad_norm": optax.global_norm(c_grad),
        "actor/grad_norm": optax.global_norm(p_grad),
    }
    new = TrainState(actor, critic, log_alpha, actor_opt, critic_opt, alpha_opt, ts.step + 1)
    return new, metrics


def _update_many(update: Callable, ts: TrainState, batches: Batch, key: jax.Array) -> tuple[TrainState, dict]:
    """Scan ``update`` over minibatches stacked on a leading axis; mean metrics."""
    num = jax.tree_util.tree_leaves(batches)[0].shape[0]
    keys = jax.random.split(key, num)

    def body(ts, xs):
        batch, k = xs
        return update(ts, batch, k)

    ts, metrics = jax.lax.scan(body, ts, (batches, keys))
    return ts, jax.tree_util.tree_map(jnp.mean, metrics)


def _act(p: _Parts, actor, obs: jax.Array, key: jax.Array | None, deterministic: bool) -> jax.Array:
    if deterministic:
        mean, _ = p.actor_net.apply(actor, obs)
        return jnp.tanh(mean)
    return _sample_action(p, actor, obs, key)[0]


def make_agent(cfg: AgentConfig) -> Agent:
    p = _build_parts(cfg)

    def init(key: jax.Array) -> TrainState:
        return _init_state(p, key)

    def update(ts: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, dict]:
        """One SGD step (see ``_update``)."""
        return _update(p, ts, batch, key)

    def update_many(ts: TrainState, batches: Batch, key: jax.Array) -> tuple[TrainState, dict]:
        """Scan ``update`` over minibatches stacked on a leading axis; mean metrics."""
        return _update_many(update, ts, batches, key)

    def act(actor, obs: jax.Array, key: jax.Array | None = None, deterministic: bool = False) -> jax.Array:
        """Stochastic tanh-Gaussian action, or tanh(mean) when deterministic."""
        return _act(p, actor, obs, key, deterministic)

    def critic_repr_batch(critic, batch: Batch):
        return _critic_repr(p, critic, batch["state"], batch["action"], batch["goal"])

    return Agent(cfg, init, update, update_many, act, critic_repr_batch)
