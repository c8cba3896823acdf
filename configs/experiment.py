"""A run, resolved once: ``resolve(config) -> Experiment``.

Whoever launches a run (``launch/run.py``, the study runner, a benchmark, a test) calls
``resolve`` once. Every runtime and every role then builds from the ``Experiment`` it is
handed, never from the raw config, so all of them agree on the env, the networks, the
sizes and the replay tables. ``resolve`` checks the whole config (one-line ``ConfigError``)
and leaves it untouched: what it derives (the paper's SGD-step count when
``num_minibatches=0``, the layout, the roles, the replay spec) lives in the experiment.

An ``Experiment`` is a frozen value that pickles (a Ray role receives it as is); its envs
are built on first use in each process, from the factories below.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

from ml_collections import ConfigDict, FrozenConfigDict

from deepcrl.buffer import replay_backend
from deepcrl.buffer.relabel import segments_needed
from deepcrl.buffer.replay_spec import ReplaySpec, make_spec
from deepcrl.configs.topologies import RoleSpec, resolve_roles
from deepcrl.configs.validation import ConfigError, Layout, agent_config, check, resolved_minibatches
from deepcrl.envs import make_env
from deepcrl.envs.base import GoalEnv
from deepcrl.envs.wrappers import VectorEnv
from deepcrl.learner import devices
from deepcrl.learner.agent import AgentConfig

RATE_LIMITS = ("ratio", "unlimited")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a run is, derived once from its config.

    ``config`` holds the run's settings with derived values filled in (what ``config.json``
    records); ``agents`` maps each learner's name (``"single"`` for the fused topology) to its
    networks; ``collector``/``learners``/``replay`` exist for the distributed topologies only.
    """

    config: FrozenConfigDict
    layout: Layout
    agents: Mapping[str, AgentConfig]
    collector: RoleSpec | None = None
    learners: tuple[RoleSpec, ...] = ()
    replay: ReplaySpec | None = None
    memory: Mapping | None = None  # the memory estimate (configs/budget.check), recorded in config.json

    # ------------------------------------------------------------------ what the run is
    @property
    def topology(self) -> str:
        return str(self.config.topology)

    @property
    def distributed(self) -> bool:
        return self.topology != "single"

    @property
    def num_seeds(self) -> int:
        return int(self.config.get("num_seeds", 1))

    @property
    def num_devices(self) -> int:
        """Local devices the program spreads over (``num_devices``; "all": every one)."""
        return devices.count(self.config.get("num_devices", 1))

    @property
    def agent(self) -> AgentConfig:
        """The run's agent: the one of ``single``, or the collector's (the driving learner's)."""
        return next(iter(self.agents.values()))

    @property
    def learner_names(self) -> list[str]:
        """Learners of a distributed run, the driving learner first."""
        return [r.name for r in self.learners]

    def learner(self, name: str) -> RoleSpec:
        return next(r for r in self.learners if r.name == name)

    @property
    def spare_tables(self) -> list[str]:
        """Replay tables no learner of the topology owns, for learners attached later."""
        return [t for t in self.replay.table_names if t.startswith("spare")] if self.replay else []

    @property
    def free_tables(self) -> list[str]:
        """Spare tables no learner has taken."""
        taken = {r.table_name for r in self.learners}
        return [t for t in self.spare_tables if t not in taken]

    @property
    def fed_tables(self) -> tuple[str, ...]:
        """The tables the collector writes every segment to: each learner's, and the free spares when
        ``attach_warm_start`` (the replay service drains those until a learner takes one)."""
        free = self.free_tables if self.config.get("attach_warm_start", False) else []
        return (*[r.table_name for r in self.learners], *free)

    def with_learners(self, added: list[RoleSpec] = (), removed: tuple[str, ...] = ()) -> Experiment:
        """This run with learners attached (their networks resolved here) and others detached."""
        learners = [r for r in self.learners if r.name not in removed] + list(added)
        agents = {n: a for n, a in self.agents.items() if n not in removed}
        for r in added:
            agents[r.name] = agent_config(r.apply_to(ConfigDict(self.config.to_dict())), self.env())
        return dataclasses.replace(self, learners=tuple(learners), agents=agents)

    @property
    def segments_per_round(self) -> int:
        """Segments a learner samples per round of ``num_minibatches`` SGD steps."""
        c = self.config
        return segments_needed(int(c.num_minibatches) * int(c.batch_size), self.layout.segment_length)

    def resources(self) -> tuple[float, float]:
        """(CPUs, GPUs) the run occupies: one process for ``single``; replay, collector and learners
        (``cpus_per_role`` each, GPUs as configured) for a distributed topology."""
        if not self.distributed:
            return 1.0, 0.0
        c, n = self.config, len(self.learners)
        cpus = float(c.get("cpus_per_role", 1.0)) * (n + 1 + (self.collector is not None))
        return cpus, float(c.gpus_per_learner) * n + float(c.gpus_per_collector)

    # ------------------------------------------------------------------ factories (built on first use)
    def env(self) -> GoalEnv:
        """The training env."""
        return env_named(self.config, str(self.config.env))

    def eval_env(self) -> GoalEnv:
        """The env evaluations run on: ``eval_env``, or the training env itself."""
        name = str(self.config.get("eval_env", "") or "")
        return env_named(self.config, name) if name and name != self.config.env else self.env()

    def train_venv(self) -> VectorEnv:
        """The batched training envs, with the config's reset rule."""
        first = bool(self.config.get("reset_to_first_start", False))
        c = self.config
        return VectorEnv(self.env(), int(c.num_envs), self.layout.episode_length, reset_to_first_start=first)

    def eval_venv(self) -> VectorEnv:
        """``num_eval_envs`` copies of the eval env, one episode each."""
        return VectorEnv(self.eval_env(), int(self.config.num_eval_envs), self.layout.episode_length)

    def role_config(self, name: str) -> ConfigDict:
        """The run's config with role ``name``'s network shape: what that role's ``config.json`` records."""
        c = ConfigDict(self.config.to_dict())
        role = next((r for r in (*self.learners, self.collector) if r and r.name == name), None)
        if role is None:
            return c
        c.actor_depth, c.critic_depth = role.actor_depth, role.critic_depth
        c.actor_width, c.critic_width = role.actor_width, role.critic_width
        return c

    def record(self) -> ConfigDict:
        """What the run's ``config.json`` holds: the resolved config and the memory estimate."""
        c = ConfigDict(self.config.to_dict())
        if self.memory is not None:
            c.memory_estimate = dict(self.memory)
        return c

    def with_memory(self, memory: Mapping) -> Experiment:
        return dataclasses.replace(self, memory=memory)


def resolve(config: ConfigDict) -> Experiment:
    """Check ``config`` and derive the run from it; ``ConfigError`` (one line) on any mistake.

    The config is not modified. The topology's roles, their networks and the replay tables are
    resolved here, so a bad depth or rate limit fails before any process starts.
    """
    # A copy, without a resumed run's old memory estimate (recomputed by the launcher).
    settings = ConfigDict({k: v for k, v in config.to_dict().items() if k != "memory_estimate"})
    env = env_named(settings, str(settings.env))
    if settings.get("eval_env", ""):
        eval_env = env_named(settings, str(settings.eval_env))
    else:
        eval_env = env
    layout = check(settings, env, eval_env)
    settings.num_minibatches = resolved_minibatches(settings, layout.episode_length)
    if settings.topology == "single":
        return Experiment(FrozenConfigDict(settings), layout, {"single": agent_config(settings, env)})
    collector, learners = resolve_roles(settings)
    agents = {r.name: agent_config(r.apply_to(settings), env) for r in learners}
    if collector is None:  # learners_from_replay: the tables of the run whose data it trains on
        tables = str(settings.from_tables).split(",")
    else:
        tables = [r.name for r in learners] + [f"spare{k + 1}" for k in range(int(settings.get("spare_tables", 0)))]
    replay = _replay_spec(settings, env, layout, tables)
    return Experiment(FrozenConfigDict(settings), layout, agents, collector, tuple(learners), replay)


def _replay_spec(config: ConfigDict, env: GoalEnv, layout: Layout, table_names: list[str]) -> ReplaySpec:
    """One Reverb table per learner, sized in steps.

    With ``rate_limit='ratio'`` each table's sample-to-insert ratio (in segments) reproduces the
    update-to-data ratio of ``single``: one round of updates per ``num_envs × unroll_length`` env
    steps collected.
    """
    if config.rate_limit not in RATE_LIMITS:
        raise ConfigError(f"unknown rate_limit {config.rate_limit!r}; valid: {', '.join(RATE_LIMITS)}")
    backend = str(config.get("replay_backend", "") or replay_backend.default())
    problem = replay_backend.problem(backend)
    if problem:
        raise ConfigError(problem)
    seg_len = layout.segment_length
    per_round = segments_needed(int(config.num_minibatches) * int(config.batch_size), seg_len)
    spi = error_buffer = None
    if config.rate_limit == "ratio":
        inserted_per_round = config.num_envs * config.unroll_length / seg_len
        spi = float(config.samples_per_insert) or per_round / inserted_per_round
        # Room for one whole collector write (N segments) and a few prefetched learner rounds.
        error_buffer = spi * config.num_envs + 4 * per_round
    return make_spec(
        table_names,
        capacity_steps=config.replay_steps_per_env * config.num_envs,
        segment_length=seg_len,
        state_size=env.spec.state_size,
        action_size=env.action_size,
        min_size_steps=config.min_replay_steps_per_env * config.num_envs,
        samples_per_insert=spi,
        error_buffer=error_buffer,
        backend=backend,
    )


def env_named(config, name: str) -> GoalEnv:
    """The env ``name`` with ``config``'s physics settings (backend, episode length, timestep), built once
    per process."""
    return _env(*_env_args(config, name))


def _env_args(config, name: str) -> tuple:
    backend = str(config.backend or "")
    timestep = float(config.get("physics_timestep", 0.0) or 0.0)
    return name, backend, int(config.episode_length or 0), timestep


@functools.lru_cache(maxsize=32)
def _env(name: str, backend: str, episode_length: int, physics_timestep: float) -> GoalEnv:
    """An env, built once per process for the same arguments (building a physics env takes seconds)."""
    kwargs: dict = {}
    if backend:
        kwargs["backend"] = backend
    if episode_length:
        kwargs["episode_length"] = episode_length
    if physics_timestep:
        kwargs["physics_timestep"] = physics_timestep
    try:
        return make_env(name, **kwargs)
    except TypeError as e:
        if "physics_timestep" in str(e):
            raise ConfigError(
                f"physics_timestep is not supported by env {name!r} (ant and humanoid families only)"
            ) from None
        raise ConfigError(str(e)) from None
    except ValueError as e:
        raise ConfigError(str(e)) from None
