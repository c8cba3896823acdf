"""A restarted role with JAX's persistent compilation cache on (issue 24, item 12).

Studies turn the cache on, and a restarted learner (or a resumed run) is the process that loads
its update from it. Each case runs in a child process: what fails here is a crash, not an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# A learner's restart in small: restore the Orbax checkpoint, then donating updates (roles/learner.py
# jits its round with donate_argnums=0), the process allocating meanwhile. Prints a checksum of the
# state and how many executables came from the cache.
_RESTARTED = """
import sys
import jax, jax.numpy as jnp, numpy as np
from deepcrl.learner.agent import AgentConfig, make_agent
from deepcrl.learner.networks import TrunkConfig
from deepcrl.rundir.checkpoints import restore_train_state, save_train_state
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None)
trunk = TrunkConfig(depth=4, width=32)
agent = make_agent(AgentConfig(4, 2, 2, actor=trunk, critic=trunk, repr_dim=16))
state = agent.init(jax.random.PRNGKey(0))
if sys.argv[2] == "save":
    save_train_state(sys.argv[1], state)
state = restore_train_state(sys.argv[1], state)
k = jax.random.PRNGKey(1)
batch = {"state": jax.random.normal(k, (128, 4)), "action": jax.random.uniform(k, (128, 2)),
         "goal": jax.random.normal(k, (128, 2))}
update = jax.jit(agent.update, donate_argnums=0)
for i in range(5):
    state, metrics = update(state, batch, jax.random.PRNGKey(i))
    churn = [np.full(1 << 16, 1e30, np.float32) for _ in range(20)]
total = sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree_util.tree_leaves(state))
print(f"{total!r} {len(hits)}")
"""


def _restart(checkpoint: Path, cache: Path, save: bool = False) -> tuple[str, int]:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-c", _RESTARTED, str(checkpoint), "save" if save else "restore"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stderr[-3000:]}"
    checksum, hits = res.stdout.split()
    return checksum, int(hits)


@pytest.mark.core  # no Reverb, TensorFlow or Ray
def test_a_restarted_learner_trains_on_from_cached_executables_and_damaged_entries(tmp_path):
    """Its restored state goes through the update loaded from the cache, and entries a killed
    role left half-written are compiled again, never loaded: the same numbers as the first life."""
    ckpt, cache = tmp_path / "latest", tmp_path / "xla_cache"
    fresh, _ = _restart(ckpt, cache, save=True)  # the first life: compiles, fills the cache
    entries = sorted(cache.glob("*-cache"), key=lambda p: p.stat().st_size)
    assert len(entries) > 2, "nothing was cached"
    for i, entry in enumerate(entries[:-1]):  # killed while writing: half an entry, or nothing
        os.truncate(entry, entry.stat().st_size // 2 if i % 2 else 0)
    restarted, hits = _restart(ckpt, cache)  # the largest entry, the update, loads from the cache
    assert hits > 0 and restarted == fresh
