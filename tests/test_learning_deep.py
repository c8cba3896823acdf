"""The central claim at CPU scale: a depth-16 actor and critic learn the point mass (tests/test_learning.py
proves depth 4). The bar is a uniformly random policy's success, measured here, plus a margin no
lucky evaluation reaches; the budget is the smallest that clears it with room on two CPU cores."""

from __future__ import annotations

import jax
import pytest
from scipy.stats import binom

from deepcrl.collector.rollout import evaluate
from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import resolve
from deepcrl.envs import make_env
from deepcrl.envs.wrappers import VectorEnv
from deepcrl.launch.single import run_single
from deepcrl.rundir.metrics import read_metrics

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)

EVAL_ENVS = 256


def random_policy_bar(num_eval_envs: int) -> tuple[float, float]:
    """(random policy's success over 20,000 episodes, the success rate num_eval_envs episodes of a policy
    that good exceed with probability below 1e-6). The rate is rounded up by 0.01 (its standard error
    is 0.002) before the binomial tail is taken."""
    venv = VectorEnv(make_env("point_mass"), 20_000)
    uniform = lambda obs, key: jax.random.uniform(key, (obs.shape[0], 2), minval=-1.0, maxval=1.0)  # noqa: E731
    p = float(jax.jit(lambda k: evaluate(venv, uniform, k)["success"])(jax.random.PRNGKey(123)))
    return p, float(binom.isf(1e-6, num_eval_envs, p + 0.01)) / num_eval_envs


def test_depth_16_crl_learns_point_mass_reaching(tmp_path):
    """Measured (JAX 0.4.34, two shared CPU cores): random success 0.072, bar 0.17 at 256 eval envs; seeds
    0/1/2 reached 0.58/0.38/0.68 after 70k env steps (288 updates of width 64); 20-25 s for this test."""
    p_random, bar = random_policy_bar(EVAL_ENVS)
    assert 0.02 < p_random < 0.2 and bar < 0.25, (p_random, bar)
    config = get_config()
    config.env = "point_mass"
    config.critic_depth = config.actor_depth = 16
    config.total_env_steps = 70_000
    config.num_evals = 2
    config.num_eval_envs = EVAL_ENVS
    config.checkpoint = False
    final = run_single(resolve(config), tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[0]["updates"] == 0 and rows[0]["eval/success"] < bar, "the untrained policy already passes"
    assert final["eval/success"] > bar, ([r["eval/success"] for r in rows], p_random, bar)
    assert final["eval/final_distance"] < rows[0]["eval/final_distance"]
