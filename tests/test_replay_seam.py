"""The replay seam (issue 25): the Ray path imports no TensorFlow or Reverb, and the backend choice is
one line of bad input wherever it cannot work (unknown, not installed, switched on resume, a checkpoint
of the other backend)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli

from deepcrl.buffer import replay_backend
from deepcrl.configs.defaults import get_config

pytestmark = pytest.mark.ray_lane

DISTRIBUTED = ["--topology", "decoupling", "--env", "point_mass", "--dry_run"]


def _error(res, needle: str) -> None:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], res.stderr[-2000:]


def test_the_ray_path_imports_no_tensorflow_or_reverb():
    """Entry points, roles, the supervisor and the Ray backend's both sides, in a fresh process: even
    where TensorFlow and Reverb are installed (the pinned lane), none of their modules is loaded."""
    code = (
        "import sys\n"
        "import deepcrl.launch.run, deepcrl.launch.distributed, deepcrl.launch.supervise\n"
        "import deepcrl.roles.replay, deepcrl.roles.learner, deepcrl.roles.collector\n"
        "from deepcrl.buffer import replay_backend\n"
        "b = replay_backend.load('ray')\n"
        "assert b.SegmentWriter.__module__ == 'deepcrl.buffer.ray_client', b.SegmentWriter.__module__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'reverb')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]", res.stdout


def test_an_unknown_backend_and_one_this_install_lacks_are_one_line():
    _error(run_cli(*DISTRIBUTED, "--replay", "leveldb"), "unknown replay backend 'leveldb'; valid: reverb, ray")
    _error(run_cli("--env", "point_mass", "--replay", "ray", "--dry_run"), "--replay is not used by topology single")
    if not replay_backend.available("reverb"):  # the latest lane (Python 3.12): Reverb has no wheel there
        _error(run_cli(*DISTRIBUTED, "--replay", "reverb"), "replay backend 'reverb' is not installed here")
        res = run_cli(*DISTRIBUTED)
        assert res.returncode == 0 and "a Ray replay" in res.stdout, res.stderr[-2000:]
    else:
        res = run_cli(*DISTRIBUTED)
        assert res.returncode == 0 and "a Reverb replay" in res.stdout, res.stderr[-2000:]


def _fake_run(folder, backend: str | None) -> str:
    """A distributed run's config.json as a run of ``backend`` left it (None: from before the choice)."""
    config = get_config().to_dict()
    config.update(topology="decoupling", env="point_mass", replay_backend=backend)
    if backend is None:
        del config["replay_backend"]
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_resume_keeps_the_backend_and_from_run_needs_its_checkpoints_backend(tmp_path):
    here = replay_backend.default()
    other = "ray" if here == "reverb" else "reverb"
    run = _fake_run(tmp_path / "r", here)
    res = run_cli("--resume", "--run_dir", run, "--replay", other, "--dry_run")
    _error(res, "--resume cannot change replay_backend" if replay_backend.available(other) else "is not installed")
    old = _fake_run(tmp_path / "old", None)  # runs from before the choice were Reverb's
    _error(run_cli("--resume", "--run_dir", old, "--replay", "ray", "--dry_run"), "--resume cannot change replay_backend")
    reverb_run = _fake_run(tmp_path / "rv", "reverb")
    res = run_cli("--topology", "learners_from_replay", "--from_run", reverb_run, "--learner_depths", "4",
                  "--replay", "ray", "--dry_run")  # fmt: skip
    _error(res, "was written by the reverb backend, which alone reads it; use --replay reverb")
