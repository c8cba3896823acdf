"""Environment registry: one name → one goal-conditioned env constructor."""

from __future__ import annotations

from collections.abc import Callable

from envs.base import GoalEnv, GoalSpec, goal_metrics

__all__ = ["GoalEnv", "GoalSpec", "goal_metrics", "make_env", "env_names", "register"]

_REGISTRY: dict[str, Callable[..., GoalEnv]] = {}


def register(name: str, factory: Callable[..., GoalEnv]) -> None:
    _REGISTRY[name] = factory


def env_names() -> list[str]:
    return sorted(_REGISTRY)


def make_env(name: str, **kwargs) -> GoalEnv:
    """Build a registered env; unknown names raise a ValueError listing valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown env {name!r}; valid envs: {', '.join(env_names())}")
    return _REGISTRY[name](**kwargs)


def _point_mass(**kw):
    from envs.point_mass import PointMass

    return PointMass(**kw)


def _point_mass_walls(**kw):
    from envs.point_mass import DIVIDER_WALLS, PointMass

    return PointMass(walls=DIVIDER_WALLS, **kw)


def _ant(**kw):
    from envs.ant import Ant

    return Ant(**kw)


register("point_mass", _point_mass)
register("point_mass_walls", _point_mass_walls)
register("ant", _ant)
