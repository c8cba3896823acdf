"""deepcrl: deep Contrastive RL, single-device and distributed (the Python API: docs/api.md).

    import deepcrl
    run = deepcrl.train(env="point_mass", total_env_steps=50_000)   # -> deepcrl.Run
    run.evaluate(num_episodes=64)                                     # {"eval/success": ..., ...}
    run.policy()                                                      # act(obs, key), jittable
    run.metrics()                                                     # {"env_steps": [...], ...}
    run.export("policy.deepcrl"); deepcrl.load_policy("policy.deepcrl").evaluate()
    deepcrl.load("runs/<name>", learner="learner1_d4")               # any topology

The names are loaded on first use (``deepcrl.launch.api``), so ``import deepcrl.envs`` and the roles'
processes do not load the launchers.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ExportedPolicy", "Run", "evaluate_policy", "load", "load_policy", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("deepcrl.launch.api"), name)
    raise AttributeError(f"module 'deepcrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
