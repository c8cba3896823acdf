"""A quiet start: no import-failure lines from any run, no wandb unless asked, roles named in Ray's log prefix."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import run_cli

from deepcrl.envs.mjx_quiet import import_quietly

TINY = [
    "--topology", "single", "--env", "point_mass", "--total_env_steps", "2000", "--num_envs", "16",
    "--num_eval_envs", "8", "--batch_size", "32", "--critic_depth", "4", "--actor_depth", "4",
    "--critic_width", "16", "--actor_width", "16", "--num_evals", "1", "--set", "num_minibatches=2",
]  # fmt: skip


def test_importing_envs_and_mjx_prints_nothing():
    """Every role imports deepcrl.envs first; after it, MJX (also through Brax) stays silent."""
    code = "import deepcrl.envs; from mujoco import mjx; import brax.envs; print('done')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout == "done\n"
    assert "Failed to import" not in res.stderr


def test_single_run_prints_no_import_failure_and_never_imports_wandb(tmp_path):
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # every imported module, on stderr
    res = run_cli(*TINY, "--run_dir", str(tmp_path / "run"), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Failed to import" not in res.stdout + res.stderr
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "deepcrl.launch.single" in imported  # the import trace is really there
    assert not [m for m in imported if m.split(".")[0] == "wandb"]


def test_role_class_repr_is_the_role_name():
    """Ray prefixes a role's log lines with its actor's repr: the role name, not the class name."""
    from deepcrl.launch.ray_roles import named_role

    class Role:
        def __init__(self, x):
            self.x = x

    obj = named_role(Role, "learner_0")(3)
    assert repr(obj) == "learner_0" and isinstance(obj, Role)
    assert not hasattr(obj, "x")  # creating the actor only records the arguments: start() builds the role


def test_quiet_import_drops_only_the_warp_notices(tmp_path, monkeypatch, capsys):
    (tmp_path / "noisy_mod.py").write_text(
        "print('Failed to import warp: No module named warp')\n"
        "print('kept line')\n"
        "print('Failed to import mujoco_warp: No module named warp')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import_quietly("noisy_mod")
    assert capsys.readouterr().out == "kept line\n"
    assert "noisy_mod" in sys.modules
    sys.modules.pop("noisy_mod")
