"""The fast update (scan, shared ψ pass, remat, unroll, bf16) against the paper-shaped reference update."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_check import bf16_dot_generals

from deepcrl.learner.agent import AgentConfig, make_agent
from deepcrl.learner.networks import TrunkConfig
from deepcrl.learner.reference import make_reference_update, unstack_state

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)

S, G, A, B = 5, 2, 3, 32
BASE = AgentConfig(S, G, A, actor=TrunkConfig(8, 16), critic=TrunkConfig(8, 16))


def _batch(seed: int = 1) -> dict:
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {
        "state": jax.random.normal(k[0], (B, S)),
        "action": jax.random.uniform(k[1], (B, A), minval=-0.9, maxval=0.9),
        "goal": jax.random.normal(k[2], (B, G)),
    }


@pytest.fixture(scope="module")
def reference_step():
    """Two reference steps from the scanned agent's initial state (unstacked), with their metrics."""
    agent = make_agent(BASE)
    ts0 = agent.init(jax.random.PRNGKey(0))
    _, ref_update = make_reference_update(BASE)
    ref_update = jax.jit(ref_update)
    ts, out = unstack_state(ts0), []
    for i in range(2):
        ts, metrics = ref_update(ts, _batch(i), jax.random.PRNGKey(10 + i))
        out.append(metrics)
    return ts0, ts, out


def _trunk(c: TrunkConfig, **kw) -> TrunkConfig:
    return dataclasses.replace(c, **kw)


VARIANTS = {  # every trunk variant the update can run with
    "scan": {},
    "remat": {"remat": True},
    "unroll2": {"scan_unroll": 2},
    "unrolled": {"scan": False},
}


@pytest.fixture(scope="module")
def fast_update():
    """The default (scanned) agent's jitted update, shared by the tests below."""
    return jax.jit(make_agent(BASE).update)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_update_equals_paper_shaped_reference(reference_step, fast_update, variant):
    ts0, ref_ts, ref_metrics = reference_step
    kw = VARIANTS[variant]
    cfg = dataclasses.replace(BASE, actor=_trunk(BASE.actor, **kw), critic=_trunk(BASE.critic, **kw))
    ts = ts0 if cfg.actor.scan else unstack_state(ts0)
    update = fast_update if not kw else jax.jit(make_agent(cfg).update)
    for i in range(2):
        ts, metrics = update(ts, _batch(i), jax.random.PRNGKey(10 + i))
        for name, value in ref_metrics[i].items():
            np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=2e-6, err_msg=name)
    got = unstack_state(ts) if cfg.actor.scan else ts
    flat_ref = jax.tree_util.tree_leaves_with_path(ref_ts)
    flat_got = jax.tree_util.tree_leaves(got)
    assert len(flat_ref) == len(flat_got)
    for (path, r), g in zip(flat_ref, flat_got, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_alpha_loss_uses_the_actors_own_sample_and_pre_step_alpha(fast_update):
    """α loss = α₀ · (entropy of the actor's sample − target): no second actor sample is drawn."""
    ts = make_agent(BASE).init(jax.random.PRNGKey(0)).replace(log_alpha=jnp.asarray(-0.7))
    new, m = fast_update(ts, _batch(), jax.random.PRNGKey(3))
    target = BASE.target_entropy_scale * A
    np.testing.assert_allclose(m["alpha/loss"], np.exp(-0.7) * (m["actor/entropy"] - target), rtol=1e-5)
    # Adam's first step moves log α by −lr·sign(grad); grad = α₀·(entropy − target).
    expected = -0.7 - BASE.alpha_lr * np.sign(float(m["actor/entropy"]) - target)
    np.testing.assert_allclose(new.log_alpha, expected, rtol=1e-5)


def test_actor_sees_the_pre_step_critic(fast_update):
    """The actor's gradient does not depend on this step's critic update (paper order)."""
    ts = make_agent(BASE).init(jax.random.PRNGKey(0))
    batch, key = _batch(), jax.random.PRNGKey(3)
    a, _ = fast_update(ts, batch, key)
    # A different critic learning rate changes the critic step but must leave the actor's step alone.
    other = make_agent(dataclasses.replace(BASE, critic_lr=1e-1))
    b, _ = jax.jit(other.update)(ts, batch, key)
    for x, y in zip(jax.tree_util.tree_leaves(a.actor), jax.tree_util.tree_leaves(b.actor), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(jax.tree_util.tree_leaves(a.critic)[0], jax.tree_util.tree_leaves(b.critic)[0])


def test_bf16_matmuls_stay_close_to_float32(fast_update):
    """compute_dtype=bfloat16: params and Adam state float32; losses and gradients near float32's."""
    bf = dataclasses.replace(
        BASE,
        actor=_trunk(BASE.actor, compute_dtype="bfloat16"),
        critic=_trunk(BASE.critic, compute_dtype="bfloat16"),
    )
    f32_agent, bf_agent = make_agent(BASE), make_agent(bf)
    ts = f32_agent.init(jax.random.PRNGKey(0))
    bf_ts = bf_agent.init(jax.random.PRNGKey(0))
    for x, y in zip(jax.tree_util.tree_leaves(ts), jax.tree_util.tree_leaves(bf_ts), strict=True):
        assert y.dtype == x.dtype and x.dtype in (jnp.float32, jnp.int32)
        np.testing.assert_array_equal(x, y)  # same float32 initial parameters
    batch, key = _batch(), jax.random.PRNGKey(3)
    # The matmuls really run in bfloat16: every Dense of the three trunks (66 of the update's 69
    # dot_generals; the other 3 are the float32 energy matrix φ·ψᵀ and its two gradients).
    bf_dots, all_dots = bf16_dot_generals(bf_agent.update, ts, batch, key)
    assert bf_dots >= all_dots - 3 and bf_dots > 0, (bf_dots, all_dots)
    assert bf16_dot_generals(f32_agent.update, ts, batch, key)[0] == 0
    new32, m32 = fast_update(ts, batch, key)
    new16, m16 = jax.jit(bf_agent.update)(ts, batch, key)
    for name in (
        "critic/loss",
        "actor/loss",
        "alpha/loss",
        "actor/entropy",
        "critic/grad_norm",
        "actor/grad_norm",
    ):
        np.testing.assert_allclose(m16[name], m32[name], rtol=3e-2, atol=1e-2, err_msg=name)
        assert m16[name] != m32[name], name  # close, but not float32's own result
    # Gradients: Adam's first moment after one step is (1 − β₁)·grad, so compare μ directly.
    for role in ("actor_opt", "critic_opt"):
        g32 = jax.tree_util.tree_leaves(getattr(new32, role)[0].mu)
        g16 = jax.tree_util.tree_leaves(getattr(new16, role)[0].mu)
        for x, y in zip(g32, g16, strict=True):
            assert y.dtype == jnp.float32
            scale = float(jnp.abs(x).max()) + 1e-8
            assert float(jnp.abs(x - y).max()) <= 0.1 * scale, role
        cos = _cosine(g32, g16)
        assert cos > 0.99, (role, cos)


def _cosine(xs, ys) -> float:
    x = jnp.concatenate([a.ravel() for a in xs])
    y = jnp.concatenate([a.ravel() for a in ys])
    return float(x @ y / (jnp.linalg.norm(x) * jnp.linalg.norm(y)))
