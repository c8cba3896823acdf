"""Named topologies of the distributed mode: which roles run, at which depths.

Every topology has one collector driven by its own learner (same depth as the
collector: together they are the "collector agent"), plus zero or more
learners that only train from the collector's data. Depths and widths of each
role can be overridden from the config.
"""

from __future__ import annotations

import dataclasses
import math

from ml_collections import ConfigDict

from deepcrl.configs.defaults import TOPOLOGIES
from deepcrl.configs.validation import ConfigError

DISTRIBUTED = tuple(t for t in TOPOLOGIES if t != "single")


@dataclasses.dataclass(frozen=True)
class RoleSpec:
    """One learner (or the collector's policy): its name is also its Reverb table."""

    name: str
    actor_depth: int
    critic_depth: int
    actor_width: int
    critic_width: int
    drives_collector: bool = False

    def apply_to(self, config: ConfigDict) -> ConfigDict:
        """A copy of the config with this role's network shape, as the role's own config."""
        c = ConfigDict(config.to_dict())
        c.actor_depth, c.critic_depth = self.actor_depth, self.critic_depth
        c.actor_width, c.critic_width = self.actor_width, self.critic_width
        return c


def _int_list(text: str, field: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ConfigError(
            f"{field} must be a comma-separated list of integers like 32,4; got {text!r}"
        ) from None
    if not values:
        raise ConfigError(f"{field} must list at least one integer, got {text!r}")
    return values


# Numeric fields of the distributed mode: (name, lowest allowed value, is the lowest value allowed).
_NUMBERS = (
    ("deep_depth", 4, True), ("shallow_depth", 4, True), ("collector_depth", 0, True),
    ("collector_width", 0, True), ("params_fetch_every", 1, True), ("samples_per_insert", 0.0, True),
    ("writer_queue", 1, True), ("gpus_per_collector", 0.0, True), ("gpus_per_learner", 0.0, True),
    ("role_timeout_s", 0.0, True), ("cpus_per_role", 0.0, False), ("checkpoint_every_s", 0.0, True),
    ("replay_checkpoint_every_s", 0.0, True), ("max_role_restarts", 0, True),
    ("role_stall_timeout_s", 0.0, True), ("role_start_timeout_s", 0.0, False), ("role_progress_every_s", 0.0, True),
)  # fmt: skip


def validate_numbers(config: ConfigDict) -> None:
    """Every numeric field of the distributed config: finite and in range, else one-line ConfigError.

    Whether the GPUs asked for exist is checked against the cluster before launch
    (``launch/cluster.check_resources``).
    """
    for name, low, inclusive in _NUMBERS:
        if name not in config:
            continue
        value = config[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if number < low or (number == low and not inclusive):
            bound = f">= {low}" if inclusive else f"> {low}"
            raise ConfigError(f"{name} must be {bound}, got {value!r}")
    for name in ("gpus_per_collector", "gpus_per_learner"):
        gpus = float(config.get(name, 0.0))
        if gpus > 1 and gpus != int(gpus):
            raise ConfigError(f"{name} above 1 must be a whole number of GPUs, got {gpus:g}")


def resolve_roles(config: ConfigDict) -> tuple[RoleSpec, list[RoleSpec]]:
    """(the collector's policy role, all learner roles — the driving learner first)."""
    topology = config.topology
    if topology not in DISTRIBUTED:
        raise ConfigError(f"topology {topology!r} is not distributed; valid: {', '.join(DISTRIBUTED)}")
    validate_numbers(config)
    deep, shallow = int(config.deep_depth), int(config.shallow_depth)
    if topology == "actor_learner":
        collector_depths = (int(config.actor_depth), int(config.critic_depth))
        learner_depths: list[int] = []
    else:
        depth = deep if "collector_deep" in topology or topology == "decoupling" else shallow
        collector_depths = (depth, depth)
        learner_depths = {
            "collector_deep_learner_shallow": [shallow],
            "collector_deep_learner_deep": [deep],
            "collector_shallow_learner_deep": [deep],
            "collector_shallow_learner_shallow": [shallow],
            "decoupling": [deep, shallow],
        }[topology]
    if config.collector_depth:
        collector_depths = (int(config.collector_depth), int(config.collector_depth))
    if config.learner_depths:
        learner_depths = _int_list(config.learner_depths, "learner_depths")
    for d in (*collector_depths, *learner_depths):
        if d <= 0 or d % 4:
            raise ConfigError(f"every role depth must be a positive multiple of 4, got {d}")

    collector_width = int(config.collector_width) or None
    widths = _int_list(config.learner_widths, "learner_widths") if config.learner_widths else []
    if widths and len(widths) not in (1, len(learner_depths)):
        raise ConfigError(
            f"learner_widths lists {len(widths)} widths for {len(learner_depths)} learners; give one or one each"
        )
    for w in (*widths, collector_width or 1):
        if w <= 0:
            raise ConfigError(f"every role width must be positive, got {w}")

    collector = RoleSpec(
        "collector_learner",
        actor_depth=collector_depths[0],
        critic_depth=collector_depths[1],
        actor_width=collector_width or int(config.actor_width),
        critic_width=collector_width or int(config.critic_width),
        drives_collector=True,
    )
    learners = [collector]
    for i, depth in enumerate(learner_depths):
        w = widths[i if len(widths) > 1 else 0] if widths else None
        learners.append(
            RoleSpec(
                f"learner{i + 1}_d{depth}",
                actor_depth=depth,
                critic_depth=depth,
                actor_width=w or int(config.actor_width),
                critic_width=w or int(config.critic_width),
            )
        )
    return collector, learners
