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

# What each topology runs, in one line (``run.py --list_topologies``). Deep and shallow are the config's
# deep_depth and shallow_depth; --collector_depth and --learner_depths override them.
DESCRIPTIONS = {
    "single": "one process: envs, replay and updates fused in one XLA program (no Ray); the fastest",
    "actor_learner": "a collector acting with its learner's policy, a replay service between them (CRL, distributed)",
    "collector_deep_learner_shallow": "a deep collector agent, and a shallow learner that trains only on its data",
    "collector_deep_learner_deep": "a deep collector agent, and a deep learner that trains only on its data",
    "collector_shallow_learner_deep": "a shallow collector agent, and a deep learner that trains only on its data",
    "collector_shallow_learner_shallow": "a shallow collector agent, and a shallow learner that trains only on its data",
    "decoupling": "the paper's decoupling: a deep collector agent, and a deep and a shallow train-only learner",
    "learners_from_replay": "no collector: learners train on a finished distributed run's replay (--from_run RUN)",
}

# The flags (config fields) that shape a run's roles, and which topologies never read them: giving one
# to such a topology is an error (``launch/run.py``), not a setting silently ignored.
ROLE_FIELDS = (
    "critic_depth", "actor_depth", "critic_width", "actor_width", "collector_depth", "collector_width",
    "learner_depths", "learner_widths", "gpus_per_collector", "gpus_per_learner", "cpus_per_role", "ray_address",
)  # fmt: skip
_DISTRIBUTED_ONLY = ROLE_FIELDS[4:]
_GRID = ("critic_depth", "actor_depth")  # depths from deep_depth/shallow_depth, --collector_depth, --learner_depths
IGNORED = {
    "single": _DISTRIBUTED_ONLY,
    "actor_learner": (),
    "learners_from_replay": (*_GRID, "collector_depth", "collector_width", "gpus_per_collector"),
    **{t: _GRID for t in DISTRIBUTED if t.startswith("collector_") or t == "decoupling"},
}


def unused_field(topology: str, given: list[str]) -> str | None:
    """A one-line reason if one of the fields ``given`` (by flag or ``--set``) is not read by ``topology``."""
    ignored = IGNORED.get(topology, ())
    for name in given:
        if name in ignored:
            uses = ", ".join(f"--{f}" for f in ROLE_FIELDS if f not in ignored)
            why = {"single": "it has no collector, learners or Ray roles",
                   "learners_from_replay": "no collector; its learners' depths come from --learner_depths"}.get(
                topology, "its roles' depths come from --collector_depth and --learner_depths"
            )
            return f"--{name} is not used by topology {topology} ({why}); the role flags it uses: {uses}"
    return None


@dataclasses.dataclass(frozen=True)
class RoleSpec:
    """One learner (or the collector's policy) and the Reverb table it samples.

    A learner of the topology samples the table named after it; one attached to a live run
    (``launch/elastic.py``) takes a spare table, and ``joined_at`` records the collector's env steps
    when its table began to be fed (-1: from the start of the run).
    """

    name: str
    actor_depth: int
    critic_depth: int
    actor_width: int
    critic_width: int
    drives_collector: bool = False
    table: str = ""  # empty: the learner's name
    joined_at: int = -1
    gpus: float = -1.0  # -1: gpus_per_learner

    @property
    def table_name(self) -> str:
        return self.table or self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

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
    ("spare_tables", 0, True),
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
    if "spare_tables" in config and float(config.spare_tables) != int(float(config.spare_tables)):
        raise ConfigError(f"spare_tables must be a whole number, got {config.spare_tables!r}")
    for name in ("gpus_per_collector", "gpus_per_learner"):
        gpus = float(config.get(name, 0.0))
        if gpus > 1 and gpus != int(gpus):
            raise ConfigError(f"{name} above 1 must be a whole number of GPUs, got {gpus:g}")


def resolve_roles(config: ConfigDict) -> tuple[RoleSpec | None, list[RoleSpec]]:
    """(the collector's policy role, all learner roles — the driving learner first); with
    ``learners_from_replay``, no collector and learners that all sample ``from_table``."""
    topology = config.topology
    if topology not in DISTRIBUTED:
        raise ConfigError(f"topology {topology!r} is not distributed; valid: {', '.join(DISTRIBUTED)}")
    validate_numbers(config)
    if topology == "learners_from_replay":
        return None, _from_replay_learners(config)
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
    _check_depths([*collector_depths, *learner_depths])
    collector_width = int(config.collector_width) or None
    widths = _widths(config.learner_widths, len(learner_depths))
    _check_widths([collector_width or 1])

    collector = RoleSpec(
        "collector_learner",
        actor_depth=collector_depths[0],
        critic_depth=collector_depths[1],
        actor_width=collector_width or int(config.actor_width),
        critic_width=collector_width or int(config.critic_width),
        drives_collector=True,
    )
    names = [f"learner{i + 1}_d{depth}" for i, depth in enumerate(learner_depths)]
    return collector, [collector, *_learner_specs(config, names, learner_depths, widths)]


def _from_replay_learners(config: ConfigDict) -> list[RoleSpec]:
    if not config.get("from_run") or not config.get("from_table"):
        raise ConfigError("learners_from_replay needs --from_run RUN: a finished distributed run's directory")
    if not config.learner_depths:
        raise ConfigError("learners_from_replay needs --learner_depths, e.g. 4,16,64: one learner per depth")
    depths = _int_list(config.learner_depths, "learner_depths")
    _check_depths(depths)
    names = [f"learner{i + 1}_d{depth}" for i, depth in enumerate(depths)]
    specs = _learner_specs(config, names, depths, _widths(config.learner_widths, len(depths)))
    return [dataclasses.replace(s, table=str(config.from_table)) for s in specs]


def attach_specs(config: ConfigDict, depths_text: str, widths_text: str, taken: list[str],
                 name: str = "") -> list[RoleSpec]:  # fmt: skip
    """The learners ``launch/run.py --attach`` adds to a live run: ``depths_text`` like "64,16",
    widths as ``learner_widths``; named ``learner<i>_d<depth>`` after the ``taken`` names, or
    ``name`` (one learner only). ``ConfigError`` (one line) on a bad depth, width or name."""
    depths = _int_list(depths_text, "--learner_depths")
    _check_depths(depths)
    widths = _widths(widths_text, len(depths))
    if name:
        if len(depths) != 1:
            raise ConfigError(f"--role names one learner; --learner_depths lists {len(depths)}")
        if not name.replace("_", "").isalnum() or name in ("replay", "collector") or name.startswith("spare"):
            raise ConfigError(f"--role {name!r}: use letters, digits and _ (not replay, collector, spare*)")
        names = [name]
    else:
        names, i = [], len(taken)
        for depth in depths:
            while f"learner{i}_d{depth}" in taken or f"learner{i}_d{depth}" in names:
                i += 1
            names.append(f"learner{i}_d{depth}")
            i += 1
    clash = sorted(set(names) & set(taken))
    if clash:
        raise ConfigError(f"a learner named {clash[0]} already belongs to this run; taken: {', '.join(taken)}")
    return _learner_specs(config, names, depths, widths)


def _learner_specs(config: ConfigDict, names: list[str], depths: list[int], widths: list[int]) -> list[RoleSpec]:
    specs = []
    for i, (name, depth) in enumerate(zip(names, depths, strict=True)):
        w = widths[i if len(widths) > 1 else 0] if widths else None
        specs.append(RoleSpec(name, actor_depth=depth, critic_depth=depth, actor_width=w or int(config.actor_width),
                              critic_width=w or int(config.critic_width)))  # fmt: skip
    return specs


def _check_depths(depths: list[int]) -> None:
    for d in depths:
        if d <= 0 or d % 4:
            raise ConfigError(f"every role depth must be a positive multiple of 4, got {d}")


def _widths(text: str, n: int) -> list[int]:
    """Learner widths from ``text`` (empty: none given), one for all or one per learner."""
    widths = _int_list(text, "learner_widths") if text else []
    if widths and len(widths) not in (1, n):
        raise ConfigError(f"learner_widths lists {len(widths)} widths for {n} learners; give one or one each")
    _check_widths(widths)
    return widths


def _check_widths(widths: list[int]) -> None:
    for w in widths:
        if w <= 0:
            raise ConfigError(f"every role width must be positive, got {w}")
