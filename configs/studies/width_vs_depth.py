"""Width vs depth at equal parameter budgets: each deeper network is matched by a wider shallow one.

For every depth ``d`` beyond the first (the base depth ``d0``, at the base
width ``w0``), two runs spend the same number of parameters: ``(d, w0)``
("scaled: depth") and ``(d0, w)`` ("scaled: width") with ``w`` chosen so the
agent's parameter count (actor + φ + ψ, counted with
``learner.networks.count_params``) matches within a few per cent.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
from ml_collections import ConfigDict

from deepcrl.configs.experiment import resolve
from deepcrl.configs.studies import Run, check_depths, seed_tag
from deepcrl.learner.agent import make_agent
from deepcrl.learner.networks import count_params

DESCRIPTION = "Final success vs parameter count, spending the budget on depth or on width."
# Assumed envs (the excerpt does not name the width figure's envs).
DEFAULT_ENVS = {"paper": ["ant_big_maze", "humanoid", "arm_push_easy"], "cpu": ["point_mass_walls"]}
DEFAULT_OPTIONS = {"paper": {"depths": [4, 8, 16, 32, 64]}, "cpu": {"depths": [4, 8, 16]}}

CURVE_KEYS = ("scaled", "depth", "width")
FINAL_X, FINAL_LINES = "params", ("scaled",)
COVERAGE_BY = None
TOLERANCE = 0.03  # budgets must match within 3 %


def agent_params(config: ConfigDict, depth: int, width: int) -> int:
    """Exact parameter count of actor + critic for one shape (shapes only: nothing is computed)."""
    c = ConfigDict(config.to_dict())
    c.critic_depth = c.actor_depth = depth
    c.critic_width = c.actor_width = width
    state = jax.eval_shape(make_agent(resolve(c).agent).init, jax.random.PRNGKey(0))
    return count_params((state.actor, state.critic))


def matching_width(config: ConfigDict, depth: int, budget: int) -> tuple[int, int]:
    """(width, params) at ``depth`` closest to ``budget``: the count is a quadratic in width, fitted exactly."""
    p1, p2, p3 = (agent_params(config, depth, w) for w in (1, 2, 3))
    a = (p3 - 2 * p2 + p1) / 2
    b = p2 - p1 - 3 * a
    c = p1 - a - b
    count = lambda w: int(round(a * w * w + b * w + c))
    w = (-b + math.sqrt(b * b - 4 * a * (c - budget))) / (2 * a)
    best = min((max(1, math.floor(w)), math.ceil(w)), key=lambda v: abs(count(v) - budget))
    return best, count(best)


def get_runs(
    envs: list[str], seeds: list[int], scale: str, options: dict, base: Callable[[str], ConfigDict]
) -> list[Run]:
    depths = check_depths(options["depths"])
    if len(depths) < 2:
        raise ValueError(f"width_vs_depth needs a base depth and at least one deeper one, got {depths}")
    d0, runs = depths[0], []
    for env_name in envs:
        config = base(env_name)
        w0 = int(config.critic_width)
        shapes = [("base", d0, w0, agent_params(config, d0, w0))]
        for d in depths[1:]:
            budget = agent_params(config, d, w0)
            w, params = matching_width(config, d0, budget)
            if abs(params - budget) > TOLERANCE * budget:
                raise ValueError(f"no width at depth {d0} matches {budget} parameters within {TOLERANCE:.0%}")
            shapes += [("depth", d, w0, budget), ("width", d0, w, params)]
        for scaled, d, w, params in shapes:
            for seed in seeds:
                runs.append(
                    Run(
                        f"{env_name}-{scaled}-d{d}-w{w}-{seed_tag(seed)}",
                        {
                            "env": env_name,
                            "seed": seed,
                            "critic_depth": d,
                            "actor_depth": d,
                            "critic_width": w,
                            "actor_width": w,
                        },  # fmt: skip
                        {"env": env_name, "scaled": scaled, "depth": d, "width": w, "params": params},
                    )
                )
    return runs
