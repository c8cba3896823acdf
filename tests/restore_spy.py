"""Test helper: run ``launch/run.py`` as a user does, recording the train state a resumed run trains from.

A resumed run that silently started over would still write every epoch once and count its
updates up; what tells the two apart is the state the run continues from. The child process
wraps ``make_single_trainer`` so that the carry entering ``prefill`` (the first compiled call
after the restore) has its train state pickled to ``path``; nothing else changes.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import ROOT

_CHILD = r"""
import os, pickle, runpy, sys
import jax
import deepcrl.launch.single as single

make_single_trainer = single.make_single_trainer


def recording(config):
    trainer = make_single_trainer(config)

    def prefill(carry):
        path = os.environ["DEEPCRL_TEST_RESTORED"]
        if not os.path.exists(path):  # the first prefill: right after the restore
            with open(path, "wb") as f:
                pickle.dump(jax.device_get(carry.train_state), f)
        return trainer.prefill(carry)

    return trainer._replace(prefill=prefill)


single.make_single_trainer = recording
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_cli_recording_restore(*args: str, path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``launch/run.py *args`` in a fresh process; the train state it trains from is pickled to ``path``."""
    env = {**os.environ, "DEEPCRL_TEST_RESTORED": str(path)}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT / "launch" / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def load_recorded(path: Path):
    with open(path, "rb") as f:
        return pickle.load(f)


def assert_trees_bitwise_equal(a, b) -> None:
    import jax

    flat_a = jax.tree_util.tree_leaves_with_path(a)
    flat_b = jax.tree_util.tree_leaves(b)
    assert len(flat_a) == len(flat_b) > 0
    for (where, x), y in zip(flat_a, flat_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(where))
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), jax.tree_util.keystr(where)  # bitwise


def complete_lines(text: str) -> str:
    """The whole lines of a file a killed process was appending to (a torn last line dropped)."""
    return "".join(line for line in text.splitlines(keepends=True) if line.endswith("\n"))
