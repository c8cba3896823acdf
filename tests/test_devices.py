"""One program over several devices (issue 26), on 4 host CPU devices in a process of its own.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts: the checks run in
``tests/devices_check.py`` (one subprocess, one set of compiles) and these tests assert on its figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli

from deepcrl.rundir.metrics import read_metrics

pytestmark = pytest.mark.core  # also run on today's JAX (.venv-latest; see .ci/run)
HOST_DEVICES = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


@pytest.fixture(scope="module")
def checks(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("devices") / "checks.json"
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "devices_check.py"), str(out)],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    found = json.loads(out.read_text())
    assert found["local_devices"] == 4
    return found


@pytest.mark.parametrize("case", ["d4_n2", "d4_n4", "d4_remat_n2", "d16_n4", "d16_remat_n4"])
def test_the_sharded_update_is_the_one_device_update_of_the_global_batch(checks, case):
    got = checks["update"][case]
    assert got["devices"] == int(case[-1])  # the train state really lives on N devices ...
    assert got["gathers"] and got["reduces"]  # ... the program moves ψ and gradients between them ...
    assert got["state"] < 1e-5 and got["metrics"] < 1e-5, got  # ... and computes what one device does


def test_every_positive_is_scored_against_the_whole_global_batch(checks):
    """B − 1 negatives per positive, not B/N − 1: the sharded loss is the global batch's InfoNCE, and
    differs from the mean of per-device blocks (what per-device negatives would give)."""
    neg = checks["update"]["negatives"]
    assert neg["sharded"] == pytest.approx(neg["global"], abs=1e-5)
    assert abs(neg["per_device"] - neg["global"]) > 0.5, neg  # fewer negatives: a much lower InfoNCE


def test_activation_memory_per_device_falls_with_the_device_count(checks):
    mem = {int(n): b for n, b in checks["memory"].items()}
    assert mem[2] < 0.6 * mem[1] and mem[4] < 0.6 * mem[2], mem


def test_the_memory_estimate_is_per_device(checks):
    """Depth 1024 on a GPU: replay, batches and the update's activations per device fall as 1/N; the
    replicated train state does not."""
    est = {int(n): e for n, e in checks["budget"].items()}
    assert [est[n]["num_devices"] for n in (1, 2, 4)] == [1, 2, 4]
    for n in (2, 4):
        assert est[n]["train_state"] == est[1]["train_state"]
        for item in ("replay", "batches", "activations", "logits"):  # B/N x B logits: global negatives
            assert est[n][item] == pytest.approx(est[1][item] / n, rel=0.02), (item, n, est)
    assert est[4]["total"] < 0.5 * est[1]["total"]


def test_one_seeds_envs_and_replay_are_split_and_the_agent_replicated(checks):
    """``single`` on 2 devices, one seed of 8 envs: each device holds 4 envs' state and replay."""
    split = checks["split"]
    assert split["buffer_state"] == [[2000, 4, 2]] * 2 and split["env_obs"] == [[4, 4]] * 2, split
    assert split["critic_kernel"][0] == split["critic_kernel"][1] and split["step"] > 0, split


def test_k_seeds_split_over_devices_give_the_numbers_of_one_device(checks):
    seeds = checks["seeds"]
    assert seeds["devices"] == [1, 2]
    # no collective between seeds: the same per-seed programs (today's JAX may fuse the batched kernels
    # of 2 and 4 stacked seeds differently: float reassociation over one epoch, no more)
    assert seeds["state"] < 1e-3 and seeds["metrics"] < 5e-2, seeds


def test_a_single_run_over_two_devices_learns(tmp_path):
    """point_mass reaching at ``test_learning``'s settings, envs, replay and batch split over 2 devices."""
    res = run_cli("--env", "point_mass", "--devices", "2", "--total_env_steps", "200000", "--num_evals", "4",
                  "--set", "num_minibatches=32", "--set", "checkpoint=false", "--noprogress",
                  "--run_dir", str(tmp_path / "run"), env=HOST_DEVICES)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 devices" in res.stdout, res.stdout
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert rows[0]["eval/success"] < 0.5 and rows[-1]["eval/success"] >= 0.8, [r["eval/success"] for r in rows]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--devices", "8"], "num_devices=8 but this host has 4 cpu device(s)"),
        (["--devices", "3"], "num_envs=64 must be a multiple of num_devices=3"),
        (["--devices", "2", "--batch_size", "255"], "batch_size=255 must be a multiple of num_devices=2"),
        (["--devices", "4", "--num_seeds", "2"], "num_seeds=2 must be a multiple of num_devices=4"),
        (["--devices", "two"], "--devices must be a number of devices or all"),
        (["--devices", "2", "--topology", "decoupling"], "num_devices > 1 runs only with topology single"),
    ],
)
def test_bad_device_counts_are_one_line_and_exit_2(tmp_path, args, needle):
    res = run_cli("--env", "point_mass", *args, "--dry_run", "--run_dir", str(tmp_path / "r"), env=HOST_DEVICES)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and needle in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr and not (tmp_path / "r").exists()
