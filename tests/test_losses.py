"""CRL losses on hand-computable batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from deepcrl.learner.agent import AgentConfig, make_agent
from deepcrl.learner.losses import (
    energy,
    energy_matrix,
    energy_matrix_broadcast,
    infonce_loss,
    tanh_gaussian_sample,
)
from deepcrl.learner.networks import TrunkConfig

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)


def test_energy_is_negative_l2_distance():
    phi = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    psi = jnp.array([[0.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(energy_matrix(phi, psi), [[0.0, -4.0], [-5.0, -3.0]], atol=1e-5)
    np.testing.assert_allclose(energy(phi, psi), [0.0, -3.0], atol=1e-5)


def test_infonce_by_hand():
    logits = jnp.array([[0.0, -4.0], [-5.0, -3.0]])
    loss, metrics = infonce_loss(logits, logsumexp_penalty=0.1)
    lse0 = np.log(np.exp(0.0) + np.exp(-4.0))
    lse1 = np.log(np.exp(-5.0) + np.exp(-3.0))
    ce = ((lse0 - 0.0) + (lse1 - (-3.0))) / 2
    np.testing.assert_allclose(metrics["critic/infonce"], ce, rtol=1e-5)
    np.testing.assert_allclose(loss, ce + 0.1 * (lse0**2 + lse1**2) / 2, rtol=1e-5)
    assert float(metrics["critic/accuracy"]) == 1.0


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean, log_std = jnp.array([[0.3, -1.2]]), jnp.array([[-0.5, 0.4]])
    action, log_prob = tanh_gaussian_sample(jax.random.PRNGKey(3), mean, log_std)
    u = np.arctanh(np.asarray(action, np.float64))
    expected = np.sum(
        norm.logpdf(u, np.asarray(mean), np.exp(np.asarray(log_std))) - np.log(1 - np.tanh(u) ** 2)
    )
    np.testing.assert_allclose(log_prob, [expected], rtol=1e-3)


def test_tanh_correction_is_floored_as_in_the_paper_code():
    """A saturated sample: the paper's log(1 − a² + 1e-6) caps the correction near 13.8 nats."""
    mean, log_std = jnp.array([[12.0]]), jnp.array([[-5.0]])  # u ≈ 12: tanh(u) == 1 in float32
    action, log_prob = tanh_gaussian_sample(jax.random.PRNGKey(0), mean, log_std)
    u = 12.0 + np.exp(-5.0) * np.asarray(jax.random.normal(jax.random.PRNGKey(0), (1, 1)))[0, 0]
    gauss = norm.logpdf(u, 12.0, np.exp(-5.0))
    a = np.float32(np.tanh(u))
    np.testing.assert_allclose(log_prob, [gauss - np.log(1 - a**2 + 1e-6)], rtol=1e-4)
    assert float(log_prob[0]) < gauss + 13.9  # the exact correction would add 2|u| − 2·log 2 ≈ 22.6


def test_update_gradients_finite_and_params_move():
    cfg = AgentConfig(
        state_size=3, goal_size=2, action_size=2, actor=TrunkConfig(8, 16), critic=TrunkConfig(8, 16)
    )
    agent = make_agent(cfg)
    ts = agent.init(jax.random.PRNGKey(0))
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    batch = {
        "state": jax.random.normal(k[0], (32, 3)),
        "action": jax.random.uniform(k[1], (32, 2), minval=-1, maxval=1),
        "goal": jax.random.normal(k[2], (32, 2)),
    }
    new, metrics = jax.jit(agent.update)(ts, batch, jax.random.PRNGKey(2))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["critic/grad_norm"]) > 0 and float(metrics["actor/grad_norm"]) > 0
    assert int(new.step) == 1
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), ts.critic, new.critic)
    assert max(jax.tree_util.tree_leaves(moved)) > 0
    assert float(new.log_alpha) != float(ts.log_alpha)


def test_matmul_energy_matrix_equals_broadcast_form_with_gradients():
    """The fast logits (matmul off the diagonal, direct on it) equal the B×B×d form, gradients too."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    phi = 3.0 * jax.random.normal(k1, (16, 8))
    psi = phi + 0.01 * jax.random.normal(k2, (16, 8))  # tiny positive distances: where cancellation would bite
    psi = psi.at[8:].set(3.0 * jax.random.normal(k2, (8, 8)))
    np.testing.assert_allclose(energy_matrix(phi, psi), energy_matrix_broadcast(phi, psi), rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(jnp.diag(energy_matrix(phi, psi)), energy(phi, psi), rtol=1e-6)

    def loss(f):
        return lambda a, b: infonce_loss(f(a, b), 0.1)[0]

    fast = jax.grad(loss(energy_matrix), (0, 1))(phi, psi)
    slow = jax.grad(loss(energy_matrix_broadcast), (0, 1))(phi, psi)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
