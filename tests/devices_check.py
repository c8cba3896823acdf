"""Test helper, run in its own process with several CPU "devices" (``XLA_FLAGS`` is read once, when JAX
starts, so ``tests/test_devices.py`` cannot set it in the test session's own process).

``python tests/devices_check.py OUT.json`` runs every check below and writes their figures; the
assertions are in ``tests/test_devices.py``.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from deepcrl.configs import budget  # noqa: E402
from deepcrl.configs.defaults import get_config  # noqa: E402
from deepcrl.configs.experiment import resolve  # noqa: E402
from deepcrl.configs.presets import paper  # noqa: E402
from deepcrl.launch.single import make_single_trainer  # noqa: E402
from deepcrl.learner import devices  # noqa: E402
from deepcrl.learner.agent import AgentConfig, make_agent  # noqa: E402
from deepcrl.learner.losses import energy_matrix, infonce_loss  # noqa: E402
from deepcrl.learner.networks import TrunkConfig  # noqa: E402

S, G, A, B, M = 5, 2, 3, 32, 1  # M = 1: the metrics are those of the first SGD step


def _batch() -> dict:
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    return {
        "state": jax.random.normal(k[0], (M, B, S)),
        "action": jax.random.uniform(k[1], (M, B, A), minval=-0.9, maxval=0.9),
        "goal": jax.random.normal(k[2], (M, B, G)),
    }


def _max_diff(a, b) -> float:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in pairs)


def sharded_update(agent, ts, batch, n: int):
    """``update_many`` over ``n`` devices: parameters replicated, each minibatch split along its batch axis."""
    mesh = devices.make_mesh(n)
    rep, split = devices.tree_shardings(mesh, ts, None), devices.tree_shardings(mesh, batch, 1)
    fn = jax.jit(agent.update_many)
    args = (devices.put(ts, rep), devices.put(batch, split), jax.random.PRNGKey(3))
    return fn(*args), fn.lower(*args).compile()


CASES = {"d4_n2": (4, False, 2), "d4_n4": (4, False, 4), "d4_remat_n2": (4, True, 2), "d16_n4": (16, False, 4),
         "d16_remat_n4": (16, True, 4)}  # fmt: skip


def update_exactness() -> dict:
    """Per case (depth, remat, N): the largest difference of parameters, optimizer state and metrics from
    the one-device update of the same global batch; whether the program gathers and reduces across
    devices. And the InfoNCE of the sharded update against that of the global batch's B×B logits and
    of per-device B/N×B/N blocks (what an update with per-device negatives computes)."""
    out, batch, agents = {}, _batch(), {}
    for name, (depth, remat, n) in CASES.items():
        if (depth, remat) not in agents:
            trunk = TrunkConfig(depth, 16, remat=remat)
            agent = make_agent(AgentConfig(S, G, A, actor=trunk, critic=trunk))
            ts = agent.init(jax.random.PRNGKey(0))
            agents[depth, remat] = agent, ts, jax.jit(agent.update_many)(ts, batch, jax.random.PRNGKey(3))
        agent, ts, (one_ts, one_m) = agents[depth, remat]
        (ts_n, m_n), compiled = sharded_update(agent, ts, batch, n)
        text = compiled.as_text()
        out[name] = {
            "state": _max_diff(one_ts, ts_n),
            "metrics": _max_diff(one_m, m_n),
            "gathers": "all-gather" in text or "all-to-all" in text or "collective-permute" in text,
            "reduces": "all-reduce" in text or "reduce-scatter" in text,
            "devices": len(ts_n.step.sharding.device_set),
            "infonce": float(m_n["critic/infonce"]),
        }
    # The loss of the first SGD step (M = 1), at the initial parameters, computed by hand.
    agent, ts, _ = agents[4, False]
    phi, psi = agent.critic_repr(ts.critic, {k: v[0] for k, v in batch.items()})
    c = agent.config.logsumexp_penalty
    ce = lambda lg: float(infonce_loss(lg, c)[1]["critic/infonce"])  # noqa: E731
    blocks = [ce(energy_matrix(phi[i : i + B // 4], psi[i : i + B // 4])) for i in range(0, B, B // 4)]
    out["negatives"] = {"sharded": out["d4_n4"]["infonce"], "global": ce(energy_matrix(phi, psi)),
                        "per_device": float(np.mean(blocks))}  # fmt: skip
    return out


def memory_per_device() -> dict:
    """XLA's temporary bytes per device of one update at depth 8, batch 512, over 1, 2 and 4 devices."""
    trunk = TrunkConfig(8, 32)
    agent = make_agent(AgentConfig(S, G, A, actor=trunk, critic=trunk))
    ts = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
    out = {}
    for n in (1, 2, 4):
        mesh = devices.make_mesh(n)
        batch = {k: jax.ShapeDtypeStruct((1, 512, d), jnp.float32, sharding=devices.sharding(mesh, 1))
                 for k, d in (("state", S), ("action", A), ("goal", G))}  # fmt: skip
        rep = devices.sharding(mesh, None)
        state = jax.tree_util.tree_map(lambda x, r=rep: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=r), ts)
        key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
        analysis = jax.jit(agent.update_many).lower(state, batch, key).compile().memory_analysis()
        out[str(n)] = int(analysis.temp_size_in_bytes)
    return out


def budget_per_device() -> dict:
    """``configs/budget.py``'s estimate for ``single`` on a GPU at depth 1024 (Humanoid, the paper
    preset's sizes), per device, over 1, 2 and 4 devices: each item."""
    out = {}
    for n in (1, 2, 4):
        config = paper()
        config.update(env="humanoid", critic_depth=1024, actor_depth=512, num_devices=n)
        est = budget.estimate(resolve(config), accelerator=True)
        out[str(n)] = {**est["roles"]["single"]["device"], "total": est["device_bytes"], "num_devices": est["num_devices"]}
    return out


def one_seed_split() -> dict:
    """``single`` with one seed on 2 devices: the shapes each device holds of the buffer, the env state,
    the agent and a minibatch after one epoch."""
    config = get_config()
    config.update(env="point_mass", num_envs=8, num_eval_envs=4, batch_size=32, critic_width=16, actor_width=16,
                  num_minibatches=2, unroll_length=25, min_replay_steps_per_env=50, total_env_steps=2000,
                  num_evals=1, checkpoint=False, num_devices=2)  # fmt: skip
    trainer = make_single_trainer(resolve(config))
    carry, _ = trainer.train_epoch(trainer.prefill(trainer.init(jax.random.PRNGKey(0))))
    shard = lambda x: [list(s.data.shape) for s in x.addressable_shards]  # noqa: E731
    return {"buffer_state": shard(carry.buffer.data["state"]), "env_obs": shard(carry.env_state.obs),
            "critic_kernel": shard(jax.tree_util.tree_leaves(carry.train_state.critic)[0]),
            "step": int(carry.train_state.step)}  # fmt: skip


def seeds_over_devices() -> dict:
    """K = 4 seeds of ``single`` for one epoch on 1 device and on 2 (2 seeds per device)."""
    config = get_config()
    config.update(env="point_mass", num_envs=8, num_eval_envs=4, batch_size=32, critic_width=16, actor_width=16,
                  num_minibatches=2, unroll_length=25, min_replay_steps_per_env=50, total_env_steps=2000,
                  num_evals=1, num_seeds=4, checkpoint=False)  # fmt: skip
    out = {}
    for n in (1, 2):
        config.num_devices = n
        trainer = make_single_trainer(resolve(config))
        carry = trainer.prefill(trainer.init(jax.random.split(jax.random.PRNGKey(0), 4)))
        carry, metrics = trainer.train_epoch(carry)
        out[n] = (carry, metrics)
        placed = {str(d) for d in carry.train_state.step.sharding.device_set}
        out[f"devices_{n}"] = len(placed)
    return {"state": _max_diff(out[1][0].train_state, out[2][0].train_state),
            "metrics": _max_diff(out[1][1], out[2][1]), "devices": [out["devices_1"], out["devices_2"]]}  # fmt: skip


if __name__ == "__main__":
    checks = {"update": update_exactness, "memory": memory_per_device, "budget": budget_per_device,
              "split": one_seed_split, "seeds": seeds_over_devices}  # fmt: skip
    import time

    results = {"local_devices": jax.local_device_count()}
    for name in sys.argv[2:] or checks:
        start = time.time()
        results[name] = checks[name]()
        results[f"{name}_s"] = round(time.time() - start, 1)
    open(sys.argv[1], "w").write(json.dumps(results))
