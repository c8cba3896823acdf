"""A plainly written CRL update shaped like the paper's code: the reference our fast update must equal.

Unrolled residual trunks (one Python loop over blocks, as in the paper's Flax modules), and the
paper's update order: actor and α from one actor sample with the critic as it was before the step,
then the critic, each loss computing its own network passes, and the InfoNCE logits from the B×B×d difference tensor
as the paper writes them. Same math as ``agent.update``; it is
the baseline of ``benchmarks/depth_scaling.py`` and the reference of ``tests/test_update_reference.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from deepcrl.learner.agent import AgentConfig, Batch, TrainState
from deepcrl.learner.losses import energy, energy_matrix_broadcast, infonce_loss, tanh_gaussian_sample
from deepcrl.learner.networks import Actor, Encoder


def unrolled(cfg: AgentConfig) -> AgentConfig:
    """The same agent with plain unrolled trunks (no scan, no remat)."""
    plain = {"scan": False, "remat": False, "scan_unroll": 1}
    return dataclasses.replace(
        cfg, actor=dataclasses.replace(cfg.actor, **plain), critic=dataclasses.replace(cfg.critic, **plain)
    )


def unstack_params(tree: Any) -> Any:
    """Scanned parameters (a stacked ``blocks`` entry) → the unrolled layout (``block_0``, ``block_1``…)."""
    if not isinstance(tree, dict):
        return tree
    out = {}
    for name, sub in tree.items():
        if name == "blocks":
            num = jax.tree_util.tree_leaves(sub)[0].shape[0]
            for b in range(num):
                out[f"block_{b}"] = jax.tree_util.tree_map(lambda a, b=b: a[b], sub)
        else:
            out[name] = unstack_params(sub)
    return out


def unstack_state(ts: TrainState) -> TrainState:
    """A scanned agent's train state in the unrolled layout (parameters and Adam moments)."""
    return jax.tree_util.tree_map(
        unstack_params, ts, is_leaf=lambda x: isinstance(x, dict) and "params" in x
    )


def make_reference_update(cfg: AgentConfig) -> tuple[Callable, Callable]:
    """(init, update) of the paper-shaped update for ``cfg`` with unrolled trunks."""
    cfg = unrolled(cfg)
    actor_net = Actor(cfg.actor, cfg.action_size)
    sa_net = Encoder(cfg.critic, cfg.repr_dim)
    g_net = Encoder(cfg.critic, cfg.repr_dim)
    actor_tx, critic_tx, alpha_tx = optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr), optax.adam(cfg.alpha_lr)
    target_entropy = cfg.target_entropy_scale * cfg.action_size

    def init(key: jax.Array) -> TrainState:
        k_actor, k_sa, k_g = jax.random.split(key, 3)
        actor = actor_net.init(k_actor, jnp.zeros((1, cfg.state_size + cfg.goal_size)))
        critic = {
            "sa": sa_net.init(k_sa, jnp.zeros((1, cfg.state_size + cfg.action_size))),
            "g": g_net.init(k_g, jnp.zeros((1, cfg.goal_size))),
        }
        log_alpha = jnp.zeros(())
        return TrainState(actor, critic, log_alpha, actor_tx.init(actor), critic_tx.init(critic),
                          alpha_tx.init(log_alpha), jnp.zeros((), jnp.int32))  # fmt: skip

    def update_actor_and_alpha(ts: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, dict]:
        def actor_loss(actor, critic, log_alpha):
            obs = jnp.concatenate([batch["state"], batch["goal"]], axis=-1)
            mean, log_std = actor_net.apply(actor, obs)
            action, log_prob = tanh_gaussian_sample(key, mean, log_std)
            phi = sa_net.apply(critic["sa"], jnp.concatenate([batch["state"], action], axis=-1))
            psi = g_net.apply(critic["g"], batch["goal"])
            return jnp.mean(jnp.exp(log_alpha) * log_prob - energy(phi, psi)), log_prob

        (loss, log_prob), grad = jax.value_and_grad(actor_loss, has_aux=True)(ts.actor, ts.critic, ts.log_alpha)
        upd, actor_opt = actor_tx.update(grad, ts.actor_opt)

        def alpha_loss(log_alpha):
            return jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(-log_prob - target_entropy))

        a_loss, a_grad = jax.value_and_grad(alpha_loss)(ts.log_alpha)
        a_upd, alpha_opt = alpha_tx.update(a_grad, ts.alpha_opt)
        ts = ts.replace(actor=optax.apply_updates(ts.actor, upd), actor_opt=actor_opt,
                        log_alpha=optax.apply_updates(ts.log_alpha, a_upd), alpha_opt=alpha_opt)  # fmt: skip
        return ts, {"actor/loss": loss, "alpha/loss": a_loss, "actor/entropy": -log_prob.mean()}

    def update_critic(ts: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        def critic_loss(critic):
            phi = sa_net.apply(critic["sa"], jnp.concatenate([batch["state"], batch["action"]], axis=-1))
            psi = g_net.apply(critic["g"], batch["goal"])
            return infonce_loss(energy_matrix_broadcast(phi, psi), cfg.logsumexp_penalty)

        (loss, metrics), grad = jax.value_and_grad(critic_loss, has_aux=True)(ts.critic)
        upd, critic_opt = critic_tx.update(grad, ts.critic_opt)
        ts = ts.replace(critic=optax.apply_updates(ts.critic, upd), critic_opt=critic_opt)
        return ts, {**metrics, "critic/loss": loss}

    def update(ts: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, dict]:
        ts, actor_metrics = update_actor_and_alpha(ts, batch, key)
        ts, critic_metrics = update_critic(ts, batch)
        return ts.replace(step=ts.step + 1), {**actor_metrics, **critic_metrics}

    return init, update
