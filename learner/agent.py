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


def make_agent(cfg: AgentConfig) -> Agent:
    actor_net = Actor(cfg.actor, cfg.action_size)
    sa_net = Encoder(cfg.critic, cfg.repr_dim)
    g_net = Encoder(cfg.critic, cfg.repr_dim)
    actor_tx = optax.adam(cfg.actor_lr)
    critic_tx = optax.adam(cfg.critic_lr)
    alpha_tx = optax.adam(cfg.alpha_lr)
    target_entropy = cfg.target_entropy_scale * cfg.action_size

    def init(key: jax.Array) -> TrainState:
        k_actor, k_sa, k_g = jax.random.split(key, 3)
        actor = actor_net.init(k_actor, jnp.zeros((1, cfg.state_size + cfg.goal_size)))
        critic = {
            "sa": sa_net.init(k_sa, jnp.zeros((1, cfg.state_size + cfg.action_size))),
            "g": g_net.init(k_g, jnp.zeros((1, cfg.goal_size))),
        }
        log_alpha = jnp.zeros(())
        return TrainState(
            actor=actor,
            critic=critic,
            log_alpha=log_alpha,
            actor_opt=actor_tx.init(actor),
            critic_opt=critic_tx.init(critic),
            alpha_opt=alpha_tx.init(log_alpha),
            step=jnp.zeros((), jnp.int32),
        )

    def critic_repr(critic, state, action, goal):
        phi = sa_net.apply(critic["sa"], jnp.concatenate([state, action], axis=-1))
        psi = g_net.apply(critic["g"], goal)
        return phi, psi

    def sample_action(actor, obs, key):
        mean, log_std = actor_net.apply(actor, obs)
        return tanh_gaussian_sample(key, mean, log_std)

    def update(ts: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, dict]:
        """One SGD step in the paper's order: actor and α from one actor sample, then the critic.

        The actor and the critic both see the critic as it was before this step (as in the paper's
        code), so ψ(g) is computed once and serves as the actor's target and the critic's input;
        the critic's gradient for ψ's parameters goes back through that same forward pass.
        """
        state, goal = batch["state"], batch["goal"]
        obs = jnp.concatenate([state, goal], axis=-1)
        psi, psi_vjp = jax.vjp(lambda g: g_net.apply(g, goal), ts.critic["g"])

        def actor_loss(actor):
            action, log_prob = sample_action(actor, obs, key)
            phi = sa_net.apply(ts.critic["sa"], jnp.concatenate([state, action], axis=-1))
            f = energy(phi, psi)
            loss = jnp.mean(jnp.exp(ts.log_alpha) * log_prob - f)
            return loss, (log_prob, f)

        (p_loss, (log_prob, f)), p_grad = jax.value_and_grad(actor_loss, has_aux=True)(ts.actor)
        p_upd, actor_opt = actor_tx.update(p_grad, ts.actor_opt)
        actor = optax.apply_updates(ts.actor, p_upd)

        def alpha_loss(log_alpha):  # on the actor's own sample, as in the paper's code
            return jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(-log_prob - target_entropy))

        a_loss, a_grad = jax.value_and_grad(alpha_loss)(ts.log_alpha)
        a_upd, alpha_opt = alpha_tx.update(a_grad, ts.alpha_opt)
        log_alpha = optax.apply_updates(ts.log_alpha, a_upd)

        def critic_loss(sa, psi):
            phi = sa_net.apply(sa, jnp.concatenate([state, batch["action"]], axis=-1))
            return infonce_loss(energy_matrix(phi, psi), cfg.logsumexp_penalty)

        (c_loss, c_metrics), (sa_grad, psi_grad) = jax.value_and_grad(critic_loss, (0, 1), has_aux=True)(
            ts.critic["sa"], psi
        )
        c_grad = {"sa": sa_grad, "g": psi_vjp(psi_grad)[0]}
        c_upd, critic_opt = critic_tx.update(c_grad, ts.critic_opt)
        critic = optax.apply_updates(ts.critic, c_upd)

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

    def update_many(ts: TrainState, batches: Batch, key: jax.Array) -> tuple[TrainState, dict]:
        """Scan ``update`` over minibatches stacked on a leading axis; mean metrics."""
        num = jax.tree_util.tree_leaves(batches)[0].shape[0]
        keys = jax.random.split(key, num)

        def body(ts, xs):
            batch, k = xs
            return update(ts, batch, k)

        ts, metrics = jax.lax.scan(body, ts, (batches, keys))
        return ts, jax.tree_util.tree_map(jnp.mean, metrics)

    def act(actor, obs: jax.Array, key: jax.Array | None = None, deterministic: bool = False) -> jax.Array:
        """Stochastic tanh-Gaussian action, or tanh(mean) when deterministic."""
        if deterministic:
            mean, _ = actor_net.apply(actor, obs)
            return jnp.tanh(mean)
        return sample_action(actor, obs, key)[0]

    def critic_repr_batch(critic, batch: Batch):
        return critic_repr(critic, batch["state"], batch["action"], batch["goal"])

    return Agent(cfg, init, update, update_many, act, critic_repr_batch)
