"""What a run is about to do, said before it starts (``run.py`` and ``--dry_run``): the topology and
where it runs, each role's networks, the env steps and updates it will really make, the devices.

No Ray and no Reverb here: ``single`` says its plan on the core install too.
"""

from __future__ import annotations

import jax

from deepcrl.configs.experiment import Experiment


def describe(experiment: Experiment) -> str:
    """One line saying what is about to run, and where."""
    c = experiment.config
    if not experiment.distributed:
        seeds = f", {experiment.num_seeds} seeds in one program" if experiment.num_seeds > 1 else ""
        return f"single on {c.env}: envs, replay and updates fused in one XLA program{seeds}"
    learners = [f"{r.name} (depth {r.critic_depth}{', drives the collector' if r.drives_collector else ''})"
                for r in experiment.learners]  # fmt: skip
    where = f"the Ray cluster at {c.ray_address}" if c.ray_address else "an embedded local Ray"
    if experiment.collector is None:
        return (
            f"{c.topology} on {c.env}: learners {', '.join(learners)} train on the data in the replay checkpoint "
            f"of {c.from_run} (no collector), each for the updates `single` makes in "
            f"{experiment.layout.total_env_steps:,} env steps, on {where}"
        )
    return (
        f"{c.topology} on {c.env}: a collector, a {experiment.replay.backend.capitalize()} replay and learners "
        f"{', '.join(learners)}; "
        f"{experiment.layout.total_env_steps:,} env steps on {where}"
    )


def networks(experiment: Experiment) -> list[str]:
    """One line per learner: its critic's and actor's depth and width (the collector acts with the
    driving learner's actor)."""
    lines = []
    for name, a in experiment.agents.items():
        role = next((r for r in experiment.learners if r.name == name), None)
        note = " (acts in the collector)" if role is not None and role.drives_collector else ""
        lines.append(
            f"  {name}: critic depth {a.critic.depth} width {a.critic.width}, "
            f"actor depth {a.actor.depth} width {a.actor.width}{note}"
        )
    return lines


def budget(experiment: Experiment) -> str:
    """The env steps and updates the run makes: whole epochs, so sometimes more than asked."""
    c, lay = experiment.config, experiment.layout
    asked, made = int(c.total_env_steps), lay.total_env_steps
    how = (
        f"{lay.num_epochs} epochs of {lay.collections_per_epoch} collection steps of {lay.steps_per_collection:,} "
        f"env steps, after a {lay.prefill_env_steps:,}-step prefill"
    )
    steps = f"{made:,} env steps ({how})" if made == asked else f"{asked:,} env steps asked -> {made:,}: whole epochs ({how})"
    per = "per learner" if experiment.distributed else ("per seed" if experiment.num_seeds > 1 else "")
    return f"  budget: {steps}; {lay.collections * int(c.num_minibatches):,} updates {per}".rstrip()


def devices(experiment: Experiment) -> str:
    """The device this process's JAX uses, and the GPUs a distributed run's roles ask Ray for."""
    d, n = jax.devices()[0], experiment.num_devices
    line = f"  device: {d.platform} ({getattr(d, 'device_kind', d.platform)}) for this process"
    if n > 1:
        c, k = experiment.config, experiment.num_seeds
        split = f"{k // n} seeds each" if k > 1 else f"{int(c.num_envs) // n} envs and {int(c.batch_size) // n} of each batch each"
        line = f"  devices: {n} devices ({d.platform}, {getattr(d, 'device_kind', d.platform)}): {split}"
    if experiment.distributed:
        c = experiment.config
        line += f"; roles ask Ray for GPUs: collector {float(c.gpus_per_collector):g}, each learner {float(c.gpus_per_learner):g}"
        if int(c.get("devices_per_learner", 1)) > 1:
            line += f"; each learner's update spread over {int(c.devices_per_learner)} devices"
    return line


def plan(experiment: Experiment) -> str:
    """The lines a run prints before it starts."""
    return "\n".join([describe(experiment), *networks(experiment), budget(experiment), devices(experiment)])
