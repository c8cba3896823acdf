"""Config switches reach the program a real ``single`` run compiles, not only the unit they name.

``eval_env``, ``reset_to_first_start``, ``remat`` and ``compute_dtype`` each have a unit test of
their own (tests/test_paper_fidelity.py, tests/test_networks.py, tests/test_update_reference.py);
here each goes through ``make_single_trainer(resolve(config))``, the function ``launch/run.py`` trains with,
so a config field dropped on the way (resolve.py, the trainer) fails a test. Nothing here trains
beyond one update: the checks trace, lower, or run init / prefill / one evaluation / one epoch of
one update (the AgentConfig fields and gamma), on small settings.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_check import bf16_dot_generals, checkpoint_policies
from ml_collections import ConfigDict

from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import resolve
from deepcrl.envs import make_env
from deepcrl.launch.single import make_single_trainer
from deepcrl.learner.agent import Agent, TrainState
from deepcrl.learner.networks import SAVE_MATMULS

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)


def small_config(**fields):
    """Defaults shrunk to a few envs and narrow nets (as tests/test_seeds.py's runs), then ``fields``."""
    config = get_config()
    config.update(
        dict(num_envs=8, num_eval_envs=4, batch_size=32, critic_width=16, actor_width=16, num_minibatches=2)
    )
    config.update(dict(unroll_length=25, min_replay_steps_per_env=50, total_env_steps=5000, checkpoint=False))
    config.update(fields)
    return config


@pytest.mark.parametrize("remat, dtype", [(True, "bfloat16"), (False, "float32")])
def test_remat_and_bf16_reach_the_trained_program(remat, dtype):
    """The epoch a run compiles recomputes whole blocks and multiplies in bfloat16 exactly when asked."""
    trainer = make_single_trainer(resolve(small_config(remat=remat, compute_dtype=dtype)))
    carry = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))  # shapes only: nothing runs
    policies = set(checkpoint_policies(trainer.train_epoch, carry))
    assert policies == ({None} if remat else {SAVE_MATMULS}), policies  # scanned blocks: SAVE_MATMULS off
    bf16, dots = bf16_dot_generals(trainer.train_epoch, carry)
    if dtype == "bfloat16":
        # Acting (the actor) and the update (actor, φ, ψ): all but the float32 energy matrices.
        assert bf16 >= dots - 5 and bf16 > 0, (bf16, dots)
        hlo = trainer.train_epoch.lower(carry).as_text()  # what XLA is handed
        assert "xbf16>" in hlo and "dot_general" in hlo
    else:
        assert bf16 == 0, (bf16, dots)


def test_eval_env_is_what_a_run_evaluates_on():
    """Train on the u4 point-mass maze, evaluate on its far-goal layout: every goal a run's evaluation
    draws lies in one of the eval layout's goal cells.

    With the actor zeroed the action is 0 and the mass never leaves its start, so one eval env's
    final distance is its start-to-goal distance (the goal sits at a cell centre, the start within
    0.05 cell of its own): 2, 3, 3.2 or 3.6 cells for the far goal cells.
    """
    config = small_config(env="point_mass_u4_maze", eval_env="point_mass_u4_maze_eval", num_eval_envs=1)
    trainer = make_single_trainer(resolve(config))
    carry = trainer.init(jax.random.PRNGKey(0))
    still = jax.tree_util.tree_map(jnp.zeros_like, carry.train_state.actor)
    carry = carry.replace(train_state=carry.train_state.replace(actor=still))
    distances = np.array(
        [float(trainer.evaluate(carry, jax.random.PRNGKey(k))["final_distance"]) for k in range(40)]
    )
    maze = make_env(config.eval_env).maze
    far = np.linalg.norm(maze.goal_centers - maze.start_xy, axis=1)  # 8, 12, 12.6, 14.4 m
    jitter = 0.05 * np.sqrt(2) * maze.cell_size  # the start's reset noise
    nearest = np.abs(distances[:, None] - far[None, :]).min(axis=1)
    assert (nearest <= jitter + 1e-4).all(), distances[nearest > jitter + 1e-4]
    assert len({int(np.argmin(np.abs(d - far))) for d in distances}) == len(far)  # all four drawn
    # Evaluating on the training layout instead would pass with probability below 0.6^40 < 1e-8:
    # half of its goal cells lie at distances no far goal cell has (1, 1.4, 2.2 and 2.8 cells).
    train = make_env(config.env).maze
    train_far = np.linalg.norm(train.goal_centers - train.start_xy, axis=1)
    unlike = np.abs(train_far[:, None] - far[None, :]).min(axis=1) > 2 * jitter + 1e-4
    assert unlike.mean() >= 0.4, train_far


@pytest.mark.parametrize("first", [True, False])
def test_reset_to_first_start_reaches_the_training_envs(first):
    """In a run's own training envs (after its prefill, 5 episodes), every episode starts where the first
    did, with its goal, when asked; fresh starts and goals otherwise."""
    config = small_config(reset_to_first_start=first, episode_length=10)
    trainer = make_single_trainer(resolve(config))
    carry = trainer.init(jax.random.PRNGKey(0))
    # Copies: prefill donates the carry, and a numpy view of a donated buffer may be overwritten.
    goal0 = np.array(carry.env_state.info["goal"])
    start0 = np.array(carry.env_state.obs[:, : trainer.agent.config.state_size])
    carry = trainer.prefill(carry)  # 2 unrolls of 25 steps of the run's training envs
    assert (np.asarray(carry.env_state.info["episode_id"]) == 5).all()
    goal5 = np.asarray(carry.env_state.info["goal"])
    size = int(carry.buffer.size)
    states = np.asarray(carry.buffer.data["state"])[:size]  # [T, N, S] in the order collected
    ids = np.asarray(carry.buffer.data["episode_id"])[:size]
    firsts = states[1:][ids[1:] != ids[:-1]].reshape(-1, config.num_envs, states.shape[-1])  # [4, N, S]
    assert firsts.shape[0] == 4
    if first:
        np.testing.assert_array_equal(goal5, goal0)
        np.testing.assert_array_equal(firsts, np.broadcast_to(start0, firsts.shape))
    else:
        assert not np.isclose(goal5, goal0).all(axis=1).any()
        assert not np.isclose(firsts, start0).all(axis=2).any()
    assert len(np.unique(goal0, axis=0)) == config.num_envs  # and each env its own


# ------------------------------------------------------------- AgentConfig fields and gamma (issue 24)
# One update per epoch (one collection step, one minibatch), so the epoch's metrics are that update's
# and each field's effect has a closed form. Narrow nets without LayerNorm compile the epoch in ~4 s.
ONE_UPDATE = dict(num_minibatches=1, total_env_steps=600, critic_width=8, actor_width=8, layer_norm=False,
                  repr_dim=8)  # fmt: skip
FIELDS = {  # each changed alone from the base config (defaults 0.99, 3e-4 ×3, 0.1, -0.5; repr_dim 8 here)
    "gamma": 0.5,
    "actor_lr": 1e-3,
    "critic_lr": 3e-3,
    "alpha_lr": 2e-3,
    "logsumexp_penalty": 0.5,
    "target_entropy_scale": -2.0,
    "repr_dim": 4,
}
KEY = jax.random.PRNGKey(0)


class Outcome(NamedTuple):
    config: ConfigDict
    agent: Agent
    before: TrainState  # host copies
    after: TrainState
    metrics: dict[str, float]


def _host(tree):
    return jax.tree_util.tree_map(np.array, tree)


def _one_epoch(config: ConfigDict, start=None, own_train_state=False) -> tuple[Outcome, object]:
    """init + prefill + one train_epoch of ``single``; or the epoch from ``start``, a host carry (with
    ``own_train_state``, the train state this trainer's init makes from the same key)."""
    trainer = make_single_trainer(resolve(config))
    assert (trainer.layout.collections_per_epoch, config.num_minibatches) == (1, 1)  # one update
    if start is None:
        start = _host(trainer.prefill(trainer.init(KEY)))
    elif own_train_state:  # init's own split of its key: (agent, env, run)
        start = start.replace(train_state=_host(trainer.agent.init(jax.random.split(KEY, 3)[0])))
    carry = jax.tree_util.tree_map(lambda x: jnp.copy(jnp.asarray(x)), start)  # XLA's own copy: donated
    carry, metrics = trainer.train_epoch(carry)
    outcome = Outcome(config, trainer.agent, start.train_state, _host(carry.train_state),
                      {k: float(v) for k, v in metrics.items()})  # fmt: skip
    return outcome, start


@pytest.fixture(scope="module")
def base_run():
    """The base run and its prefilled carry, shared: init and prefill read none of the fields above
    (acting uses the actor only; Adam's state does not depend on its rate) but repr_dim, whose
    variant makes its own train state."""
    return _one_epoch(small_config(**ONE_UPDATE))


def _largest_change(before, after) -> float:
    pairs = zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    return max(float(np.abs(a - b).max()) for a, b in pairs)


def check_the_update(o: Outcome) -> None:
    """What one Adam step and the losses do with the config's own values (not the AgentConfig's)."""
    c, m = o.config, o.metrics
    # Adam's first step moves each parameter by lr·g/(|g| + 1e-8): the largest move is the rate.
    for name, lr in (("actor", c.actor_lr), ("critic", c.critic_lr)):
        moved = _largest_change(getattr(o.before, name), getattr(o.after, name))
        assert np.isclose(moved, lr, rtol=1e-3), (name, moved, lr)
    moved = abs(float(o.after.log_alpha) - float(o.before.log_alpha))
    assert np.isclose(moved, c.alpha_lr, rtol=1e-3), (moved, c.alpha_lr)
    # α = exp(0) = 1 at the update: alpha loss = entropy − target, target = scale·|A|.
    target = c.target_entropy_scale * o.agent.config.action_size
    assert np.isclose(m["alpha/loss"] - m["actor/entropy"], -target, atol=1e-4), (m, target)
    # Critic loss = InfoNCE + c·mean(lse²) ≥ c·mean(lse)² (Jensen); exactly InfoNCE when c = 0.
    extra = m["critic/loss"] - m["critic/infonce"]
    assert extra >= c.logsumexp_penalty * m["critic/logsumexp"] ** 2 - 1e-5, (extra, m)
    assert (extra == 0.0) == (c.logsumexp_penalty == 0), extra
    ones = {"state": jnp.ones((1, o.agent.config.state_size)), "action": jnp.ones((1, o.agent.config.action_size)),
            "goal": jnp.ones((1, o.agent.config.goal_size))}  # fmt: skip
    phi, psi = o.agent.critic_repr(o.after.critic, ones)
    assert phi.shape[-1] == psi.shape[-1] == c.repr_dim, (phi.shape, psi.shape)


def test_the_base_run_makes_one_update_with_its_config(base_run):
    """The checks below hold for the base values too (default rates, penalty, entropy scale)."""
    check_the_update(base_run[0])


@pytest.mark.parametrize("field, value", list(FIELDS.items()), ids=list(FIELDS))
def test_each_agent_field_reaches_the_update_single_runs(base_run, field, value):
    """One field changed from the base config changes the trained state or metrics, the way it
    should: the field travels config → validation.agent_config → make_single_trainer → the update."""
    (base, start), config = base_run, small_config(**ONE_UPDATE)
    assert config[field] != value
    config[field] = value
    o, _ = _one_epoch(config, start, own_train_state=field == "repr_dim")  # repr_dim: other shapes
    check_the_update(o)
    mine, theirs = jax.tree.leaves(o.after), jax.tree.leaves(base.after)
    same_state = [a.shape for a in mine] == [b.shape for b in theirs] and all(
        np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True)
    )
    assert not (same_state and o.metrics == base.metrics)  # a rate changes the step, not its metrics
    if field == "gamma":  # P(k) ∝ γ^k: the same uniform draws give offsets no larger, mean 1/(1−γ) = 2
        assert 1.0 <= o.metrics["relabel/mean_offset"] <= 3.0 < base.metrics["relabel/mean_offset"]
    if field == "logsumexp_penalty":  # same batch, same initial critic: mean(lse²) is the base run's
        ratio = lambda r: (r.metrics["critic/loss"] - r.metrics["critic/infonce"]) / r.config[field]
        assert np.isclose(ratio(o), ratio(base), rtol=1e-4), (ratio(o), ratio(base))
