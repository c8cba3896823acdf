"""Proof that the algorithm learns: CRL on the point mass, deterministic evaluation."""

from __future__ import annotations

import pytest

from deepcrl.configs.defaults import get_config
from deepcrl.configs.experiment import resolve
from deepcrl.launch.single import run_single
from deepcrl.rundir.metrics import read_metrics

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)


def test_crl_learns_point_mass_reaching(tmp_path):
    config = get_config()
    config.env = "point_mass"
    config.total_env_steps = 200_000
    config.num_minibatches = 32
    config.num_evals = 8
    config.checkpoint = False
    final = run_single(resolve(config), tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    initial = rows[0]
    assert initial["updates"] == 0
    assert initial["eval/success"] < 0.5, "the untrained policy should rarely reach the goal"
    assert final["eval/success"] >= 0.8, [r["eval/success"] for r in rows]
    assert final["eval/final_distance"] < initial["eval/final_distance"]
