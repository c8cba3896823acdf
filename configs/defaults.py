"""Default configuration: small enough to learn on two CPU cores in minutes.

The paper's GPU-sized settings are the ``paper`` preset in ``configs/presets.py``.
"""

from __future__ import annotations

from ml_collections import ConfigDict

TOPOLOGIES = (
    "single",
    "actor_learner",
    "collector_deep_learner_shallow",
    "collector_deep_learner_deep",
    "collector_shallow_learner_deep",
    "collector_shallow_learner_shallow",
    "decoupling",
    "learners_from_replay",
)


def get_config() -> ConfigDict:
    c = ConfigDict()
    _set_env_and_run(c)
    _set_collection(c)
    _set_learning(c)
    _set_networks(c)
    _set_distributed(c)
    _set_liveness(c)
    _set_reporting(c)
    return c


def _set_env_and_run(c: ConfigDict) -> None:
    """The environment, the seeds and the run directory."""
    c.topology = "single"
    c.env = "point_mass"
    c.backend = ""  # empty: the env's default backend
    c.episode_length = 0  # 0: the env's default
    c.seed = 0
    c.num_seeds = 1  # `single`: K seeds (seed, seed+1, …) vmapped in one program; seed_{s}/ per seed
    # `single`: local devices the program spreads over (0: every one; --devices all); one seed's envs, replay and
    # batch are split N ways (global-batch InfoNCE), or K seeds K/N per device (learner/devices.py).
    c.num_devices = 1
    # Distributed: local devices each learner's update spreads over (parameters replicated, batch split,
    # global-batch InfoNCE); on GPUs give each learner as many Ray GPUs (--gpus_per_learner).
    c.devices_per_learner = 1
    c.run_dir = ""  # empty: runs/<env>-<topology>-<timestamp>
    c.tag = ""  # a short label of the run, shown in its summary, study reports and TensorBoard's hparams
    c.notes = ""  # free text: why this run was made
    # Evaluate on another env of the same family (same state size, goal indices and action size),
    # e.g. ant_big_maze_eval (far goals only, as the paper did). Empty: evaluate on `env`.
    c.eval_env = ""
    # Physics seconds per substep; 0: the env's default (humanoid 0.003 = 0.03 s per env step,
    # humanoid mazes 0.0015, ant 0.005). Ant and humanoid families only.
    c.physics_timestep = 0.0
    # False: every finished episode gets a fresh start and goal. True: each env returns to its own
    # first start state and goal, as the paper's code did (the paper presets turn it on). Fresh is
    # the default here because the CPU settings run few envs (64) briefly: 64 fixed goals would
    # cover a small, seed-dependent part of the goal space, while fresh goals train on all of it.
    c.reset_to_first_start = False


def _set_collection(c: ConfigDict) -> None:
    """Data collection."""
    c.total_env_steps = 300_000
    c.num_envs = 64
    c.num_eval_envs = 64
    c.unroll_length = 50  # steps per env per collection step
    c.replay_steps_per_env = 2_000  # replay capacity, in steps per env
    c.min_replay_steps_per_env = 200  # prefill before training starts
    c.segment_length = 0  # relabeling window in steps; 0: the episode length (capped by the prefill)


def _set_learning(c: ConfigDict) -> None:
    """Learning: batches, SGD steps per collection step, the losses' and optimisers' settings."""
    c.batch_size = 256
    # SGD steps per collection step; 0: the paper code's rule, min(800, num_envs·(episode_length−1)
    # // batch_size): as many full batches as one sampled episode per env holds, at most 800.
    c.num_minibatches = 16
    c.gamma = 0.99
    c.actor_lr = 3e-4
    c.critic_lr = 3e-4
    c.alpha_lr = 3e-4
    c.logsumexp_penalty = 0.1
    c.target_entropy_scale = -0.5
    c.repr_dim = 64


def _set_networks(c: ConfigDict) -> None:
    """Networks (per role; ablation switches shared), the compute dtype and the memory check."""
    c.critic_depth = 4
    c.critic_width = 64
    c.actor_depth = 4
    c.actor_width = 64
    # Cap on the actor's depth (0: none). The paper kept the actor at 512 layers in its 1024-layer
    # runs (its actor loss diverged at 1024); the paper presets set 512.
    c.max_actor_depth = 0
    c.residual = True
    c.layer_norm = True
    c.activation = "swish"
    c.scan_blocks = True
    c.remat = False
    # Matmul inputs: "float32" or "bfloat16" (params, Adam, LayerNorm stay float32).
    c.compute_dtype = "float32"
    # Before anything is allocated, launch/run.py estimates the run's memory (configs/budget.py: replay,
    # params + Adam, the update's activations, per role) and exits 2 if it cannot fit this machine's RAM
    # (or the GPU). The estimate errs high; false skips the comparison (the estimate is still recorded).
    c.memory_check = True


def _set_distributed(c: ConfigDict) -> None:
    """Distributed topologies (ignored by `single`): roles, replay, checkpoints, restarts."""
    c.ray_address = ""  # empty: start an embedded local Ray
    # The replay service: "reverb" (the reference; x86-64 Linux, Python <= 3.11) or "ray" (a Ray actor,
    # every platform Ray reaches). Empty: reverb where it is installed, else ray (recorded in config.json).
    c.replay_backend = ""
    c.deep_depth = 32
    c.shallow_depth = 4
    c.collector_depth = 0  # 0: the topology's default
    c.collector_width = 0  # 0: actor_width / critic_width
    c.learner_depths = ""  # e.g. "32,4": the train-only learners (topology default if empty)
    c.learner_widths = ""  # one width for all, or one per learner
    c.params_fetch_every = 1  # collection steps between the collector's parameter fetches
    c.rate_limit = "ratio"  # "ratio": sample-to-insert ratio per table; "unlimited": never slow the collector
    c.samples_per_insert = 0.0  # segments sampled per segment inserted; 0: match the `single` ratio
    c.writer_queue = 2  # segment batches the collector may queue before acting waits
    c.gpus_per_collector = 0.0
    c.gpus_per_learner = 0.0  # fractions let several roles share one GPU
    c.role_timeout_s = 0.0  # 0: no limit; else fail the run if it takes longer
    c.cpus_per_role = 1.0  # Ray CPUs each role (replay, collector, every learner) asks for
    c.checkpoint_every_s = 300.0  # learners checkpoint this often (and at every evaluation); 0: evals only
    c.replay_checkpoint_every_s = 300.0  # Reverb tables checkpoint this often (and at the end); 0: end only
    c.max_role_restarts = 3  # a role that dies more often ends the run (a train-only learner is dropped)
    # Elastic learners (launch/run.py --attach / --detach): Reverb tables are fixed when the server starts,
    # so it starts with this many spare tables, each the table of one learner attached later. A spare is
    # not written to until a learner takes it (no cost); with attach_warm_start it is fed and drained
    # from the start, so an attached learner begins with what the collector's table holds.
    c.spare_tables = 2
    c.attach_warm_start = False
    # learners_from_replay: new learners train on the fixed data of a finished run's replay checkpoint
    # (launch/run.py --from_run RUN fills these: RUN, its tables, the one every learner samples).
    c.from_run = ""
    c.from_tables = ""
    c.from_table = ""


def _set_liveness(c: ConfigDict) -> None:
    """Liveness: when a silent or slow-starting role is killed and replaced."""
    # Liveness: a role silent for longer is killed (SIGKILL) and replaced like a dead one (docs/architecture.md).
    # 0: adaptive, max(120 s, 5 × the longest pause the role itself has shown: evaluations, checkpoints,
    # a round of updates); > 0: this many seconds.
    c.role_stall_timeout_s = 0.0
    c.role_start_timeout_s = 900.0  # from a role's (re)creation until its loop first runs (compiles included)
    c.role_progress_every_s = 2.0  # how often the driver asks every role for its progress; 0: no watchdog


def _set_reporting(c: ConfigDict) -> None:
    """Reporting: evaluations, epochs, checkpoints and wandb."""
    c.num_evals = 10  # evaluations = epochs
    # How total_env_steps becomes epochs. "cover": enough collection steps to reach total_env_steps,
    # spread over at most num_evals epochs (rounded up). "reference": as the paper's code, exactly
    # num_evals epochs of (total_env_steps − min_replay_steps_per_env·num_envs) // (num_evals ·
    # num_envs · unroll_length) collection steps each (floor; so a little under total_env_steps).
    c.epoch_rule = "cover"
    c.checkpoint = True
    # wandb (optional; imported only when a project is set): every metrics row, the config, the plots.
    c.wandb_project = ""  # empty: no wandb; `--wandb PROJECT` sets it
    # "online" | "offline" (no network; `wandb sync` later) | "disabled"; empty: $WANDB_MODE, else online
    c.wandb_mode = ""
    c.wandb_entity = ""  # empty: your default entity
    c.wandb_group = ""  # empty: the run directory's name (all roles of a run share it)
