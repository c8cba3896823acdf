"""Memory a run will hold, estimated from its config before anything is allocated.

``estimate(experiment)`` counts, per role and per item, the bytes a run
keeps: the replay (on-device ring buffer of ``single``, or the Reverb tables),
parameters with Adam's two moments, one SGD update's temporaries (gradients,
the activations kept for the backward pass at the batch and depth asked, with
or without remat, and the B×B logits), the sampled segments and relabeled
minibatches of one round, the envs, a host copy of the train state while a
checkpoint is written, and a fixed runtime per process. ``check(...)`` compares
that with the memory available and raises a one-line ``ConfigError`` (naming the
biggest item's knob first) if the run cannot fit, or if a count would overflow
the int32 counters kept on device.

Where memory is compared:

- ``single``: one process. On CPU everything is host RAM; on a GPU/TPU the
  replay, train state, update, batches and envs are device memory (checked
  against XLA's ``bytes_limit``) and the runtime and checkpoint copy host RAM.
- distributed, embedded local Ray (no ``ray_address``): every role runs on this
  machine, so the sum of the roles (plus Ray's own processes) is checked
  against host RAM; a role given GPUs has its device part checked against its
  share of the GPU (``nvidia-smi``'s total × the XLA memory fraction the role
  gets), when ``nvidia-smi`` exists.
- distributed on an existing cluster (``ray_address``): nothing is checked
  here; at launch ``check_nodes`` compares the largest role with the largest
  ``memory`` resource of the cluster's live nodes (``ray.nodes()``).

Host RAM is ``MemAvailable`` of ``/proc/meminfo`` (``os.sysconf`` elsewhere),
lowered to the cgroup's limit minus its usage when one is set.

Accuracy: parameter and train-state bytes are exact (``tests/test_budget.py``
checks them against ``count_params`` and the leaves of an initialised agent).
The update's temporaries (gradients, activations, logits) are a model with
rounded-up coefficients, measured against XLA's ``temp_size_in_bytes`` of the
compiled ``agent.update`` on CPU (JAX 0.4.34), before the 1.5× ``XLA_HEADROOM`` (added when
JAX 0.12 counted one shape at 1.19× what 0.4.34 did): estimate / XLA = 1.12–1.85 over
25 shapes (depth 4–256, width 64–256, batch 256–2048, actor and critic depths
apart, remat, unrolled blocks, bfloat16), 1.23–1.47 for the tests' shapes, which
keep it within [1, 2.5]; the whole `single` estimate is 1.26–1.55× XLA's count
of the compiled epoch (arguments + temporaries) for point_mass configs. GPU fusion may differ (not
measured). Reverb's chunk compression is ignored (data counted uncompressed);
env state is measured with ``jax.eval_shape`` of one reset, times a factor for
the step's temporaries; the runtime per process is a constant. The estimate
errs high: a run it rejects may still fit, which ``--set memory_check=false``
lets one try.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from deepcrl.buffer.relabel import segments_needed
from deepcrl.configs.experiment import Experiment
from deepcrl.configs.machine import accelerator_limit, gpu_total, host_available
from deepcrl.configs.validation import ConfigError, Layout
from deepcrl.envs.base import GoalEnv
from deepcrl.learner.agent import AgentConfig
from deepcrl.learner.networks import TrunkConfig

INT32_MAX = 2**31 - 1
F32 = 4  # bytes
# Coefficients of the update's temporaries, rounded up from a least-squares fit to XLA's temp size
# (CPU, JAX 0.4.34; fitted values in brackets). B×W floats kept per residual block of one trunk for
# the backward pass: scanned blocks keep their four matmul outputs and their input (critic 4.9 when
# the actor is shallow, actor 3.4; 3.25 each at equal depths, where XLA overlaps them), remat only
# the block input [0.2-0.65], unrolled blocks (scan_blocks=false) every elementwise residual [5.8-8.3].
SAVED_PER_BLOCK = {"scan": 4.0, "remat": 1.0, "unrolled": 10.0}  # actor
CRITIC_SAVED_PER_BLOCK = {"scan": 5.0, "remat": 1.0, "unrolled": 12.0}  # φ and ψ each
PER_TRUNK = 4.0  # B×W floats per trunk outside the blocks: input layer, head, a block recomputed [1.6]
LOGITS_COPIES = 10  # B×B float buffers of the InfoNCE loss and its gradient [8.0]
GRAD_COPIES = 1.0  # floats per parameter among the temporaries: gradients, Adam's update [0.69]
ENV_COPIES = 6  # env states per env alive in a step: state, next state, physics temporaries (Ant: ~4.5)
EVAL_METRICS = 8  # per-step float metrics an evaluation keeps per env
RUNTIME = 2**30  # per process: JAX, XLA, compiled programs (a small `single` run peaks at 0.6 GiB RSS)
RAY_SYSTEM = 2**30  # an embedded Ray's own processes (GCS, raylet) and the driver
# The update's temporaries above are multiplied by this: XLA's count moves between versions (one
# shape's estimate/XLA was 1.19 on JAX 0.4.34 but 0.84 on JAX 0.12), and the estimate must err high.
XLA_HEADROOM = 1.5
REVERB_ITEM = 512  # bytes of bookkeeping per item per table
SAMPLER_BATCHES = 4  # rounds of segments a learner holds on the host: 2 prefetched, 1 in use, 1 in flight

LABELS = {
    "replay": "replay", "train_state": "params+Adam", "gradients": "gradients", "activations": "activations",
    "logits": "logits", "batches": "batches", "envs": "envs", "checkpoint": "ckpt copy", "runtime": "runtime",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------------


def trunk_params(in_dim: int, t: TrunkConfig) -> int:
    """Parameters of a ``Trunk``: input layer + ``depth`` layers in blocks (Dense + LayerNorm each)."""
    ln = 2 * t.width if t.layer_norm else 0
    return in_dim * t.width + t.width + ln + t.depth * (t.width * t.width + t.width + ln)


def agent_params(cfg: AgentConfig) -> dict[str, int]:
    """Exact parameter counts: actor (trunk + mean and log-std heads), critic (φ and ψ encoders), α."""
    s, g, a, r = cfg.state_size, cfg.goal_size, cfg.action_size, cfg.repr_dim
    actor = trunk_params(s + g, cfg.actor) + 2 * (cfg.actor.width * a + a)
    head = cfg.critic.width * r + r
    critic = trunk_params(s + a, cfg.critic) + trunk_params(g, cfg.critic) + 2 * head
    return {"actor": actor, "critic": critic, "alpha": 1}


def train_state_bytes(cfg: AgentConfig) -> int:
    """Bytes of a ``TrainState``: float32 params and Adam's two moments, 3 Adam counts and the step."""
    return 3 * F32 * sum(agent_params(cfg).values()) + 4 * 4


def actor_bytes(cfg: AgentConfig) -> int:
    return F32 * agent_params(cfg)["actor"]


def _trunk_floats(t: TrunkConfig, batch: int, in_dim: int, out_dim: int, saved: dict) -> float:
    kind = "unrolled" if not t.scan else "remat" if t.remat else "scan"
    per_row = t.width * (saved[kind] * t.num_blocks + PER_TRUNK) + 2 * in_dim + 4 * out_dim
    return batch * per_row


def update_items(cfg: AgentConfig, batch: int) -> dict[str, int]:
    """Temporaries of one SGD step (``agent.update``), in bytes: the activations kept for the backward
    pass, the B×B logits and their gradient, the parameters' gradients (see the module doc)."""
    s, g, a = cfg.state_size, cfg.goal_size, cfg.action_size
    activations = (
        _trunk_floats(cfg.actor, batch, s + g, 2 * a, SAVED_PER_BLOCK)  # the actor
        + _trunk_floats(cfg.critic, batch, s + a, cfg.repr_dim, CRITIC_SAVED_PER_BLOCK)  # φ(s, a)
        + _trunk_floats(cfg.critic, batch, g, cfg.repr_dim, CRITIC_SAVED_PER_BLOCK)  # ψ(g), kept for its vjp
        + 8 * batch * (s + a + g)
    )
    return {
        "gradients": int(XLA_HEADROOM * F32 * GRAD_COPIES * sum(agent_params(cfg).values())),
        "activations": int(XLA_HEADROOM * F32 * activations),
        "logits": int(XLA_HEADROOM * F32 * LOGITS_COPIES * batch * batch),
    }


def update_bytes(cfg: AgentConfig, batch: int) -> int:
    """All temporaries of one SGD step: what XLA counts as ``temp_size_in_bytes`` of ``agent.update``."""
    return sum(update_items(cfg, batch).values())


def env_state_bytes(env: GoalEnv) -> int:
    """Bytes of one env's state (shapes only: ``jax.eval_shape`` of a reset, nothing computed)."""
    shapes = jax.eval_shape(env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32))  # no backend started here
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))


def _batches_bytes(config: ConfigDict, env: GoalEnv, layout: Layout) -> tuple[int, int]:
    """(segments of one round, everything relabeling makes of them): sampled steps, transitions, minibatches."""
    s, a, g = env.spec.state_size, env.action_size, env.spec.goal_size
    picked = int(config.num_minibatches) * int(config.batch_size)
    steps = segments_needed(picked, layout.segment_length) * layout.segment_length
    segments = F32 * steps * (s + a + 1)
    relabeled = F32 * (steps * (s + a + g + 1 + 4) + picked * (s + a + g + 1))
    return segments, relabeled


def _env_bytes(config: ConfigDict, env: GoalEnv, eval_env: GoalEnv, layout: Layout) -> tuple[int, int]:
    """(training envs with one unroll's records, evaluation envs with one episode's metrics)."""
    s, a = env.spec.state_size, env.action_size
    n, unroll, n_eval = int(config.num_envs), int(config.unroll_length), int(config.num_eval_envs)
    train = ENV_COPIES * n * env_state_bytes(env) + F32 * unroll * n * (2 * (s + a + 1) + EVAL_METRICS)
    evaluation = ENV_COPIES * n_eval * env_state_bytes(eval_env)
    return train, evaluation + F32 * layout.episode_length * n_eval * EVAL_METRICS


# ---------------------------------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------------------------------


def _role(host: dict, device: dict, on_device: bool) -> dict:
    """One role's items: ``device`` items go to device memory if it has one, else to the host."""
    device = {k: int(v) for k, v in device.items()}
    if on_device:
        return {"host": {k: int(v) for k, v in host.items()}, "device": device}
    merged = dict(device)
    for k, v in host.items():
        merged[k] = merged.get(k, 0) + int(v)
    return {"host": merged, "device": {}}


def estimate(exp: Experiment, accelerator: bool = False) -> dict:
    """Bytes per role and per item (JSON-ready). ``accelerator``: ``single`` runs on a GPU/TPU."""
    config, env, layout = exp.config, exp.env(), exp.layout
    per_step = F32 * (env.spec.state_size + env.action_size + 1)
    replay = int(config.replay_steps_per_env) * int(config.num_envs) * per_step
    segments, relabeled = _batches_bytes(config, env, layout)
    train_envs, eval_envs = _env_bytes(config, env, exp.eval_env(), layout)
    roles: dict[str, dict] = {}
    if config.topology == "single":
        # Per device: K seeds split K/N per device, or one seed's envs, replay and batch split N ways
        # (the agent replicated). On a CPU the N "devices" share the host's RAM: N times as much.
        k, n = int(config.get("num_seeds", 1)), exp.num_devices
        seeds, split = (max(k // n, 1), 1) if k > 1 else (1, n)
        cfg = exp.agent
        ts = train_state_bytes(cfg)
        device = {
            "replay": seeds * replay // split,
            "train_state": seeds * ts,
            **{name: seeds * v for name, v in update_items(cfg, int(config.batch_size) // split).items()},
            # each device's B/N rows of logits span the whole global batch's B goals
            "logits": seeds * update_items(cfg, int(config.batch_size))["logits"] // split,
            "batches": seeds * (segments + relabeled) // split,
            "envs": seeds * (train_envs // split + eval_envs),
        }
        if not accelerator:
            device = {name: n * v for name, v in device.items()}
        roles["single"] = _role({"runtime": RUNTIME, "checkpoint": k * ts}, device, accelerator)
    else:
        learners = exp.learners
        items = math.ceil(int(config.replay_steps_per_env) * int(config.num_envs) / layout.segment_length)
        roles["replay"] = _role(
            {"replay": replay + items * len(learners) * REVERB_ITEM, "runtime": RUNTIME}, {}, False
        )
        if exp.collector is not None:  # learners_from_replay has none
            ccfg = exp.agents[exp.collector.name]
            writes = (int(config.writer_queue) + 1) * int(config.num_envs) * int(config.unroll_length) * per_step
            roles["collector"] = _role(
                {"runtime": RUNTIME, "batches": writes, "train_state": actor_bytes(ccfg)},
                {"train_state": train_state_bytes(ccfg), "envs": train_envs},
                float(config.gpus_per_collector) > 0,
            )
        per_learner = int(config.get("devices_per_learner", 1))
        for role in learners:
            cfg = exp.agents[role.name]
            ts = train_state_bytes(cfg)
            roles[role.name] = _role(
                {
                    "runtime": RUNTIME,
                    "checkpoint": ts + actor_bytes(cfg),
                    "batches": SAMPLER_BATCHES * segments,
                },
                {  # per device of its devices_per_learner: each holds B/N rows of every minibatch
                    "train_state": ts,
                    **update_items(cfg, int(config.batch_size) // per_learner),
                    "logits": update_items(cfg, int(config.batch_size))["logits"] // per_learner,
                    "batches": segments + (relabeled // per_learner),  # whole segments on every device
                    "envs": eval_envs,
                },
                float(config.gpus_per_learner) > 0,
            )
        if not config.get("ray_address"):
            roles["driver"] = _role({"runtime": RAY_SYSTEM}, {}, False)
    for r in roles.values():
        r["total"] = sum(r["host"].values()) + sum(r["device"].values())
    return {
        "topology": str(config.topology),
        "roles": roles,
        "host_bytes": sum(sum(r["host"].values()) for r in roles.values()),
        "device_bytes": sum(sum(r["device"].values()) for r in roles.values()),  # per device
        "num_devices": exp.num_devices if config.topology == "single" else 1,
        "counts": counts(config, layout),
    }


def counts(config: ConfigDict, layout: Layout) -> dict:
    """Env steps (per seed) and SGD updates (per learner) the run will make."""
    return {"env_steps": layout.total_env_steps, "updates": layout.collections * int(config.num_minibatches)}


def check_counts(config: ConfigDict, layout: Layout) -> None:
    """Counts kept as int32 on device: ``single``'s env-step counter (unless jax x64 is on), and every
    learner's update counter (``TrainState.step``, int32 always)."""
    c = counts(config, layout)
    if config.topology == "single" and c["env_steps"] > INT32_MAX and not jax.config.jax_enable_x64:
        raise ConfigError(
            f"total_env_steps: this run makes {c['env_steps']:,} env steps (prefill included), past the limit "
            f"{INT32_MAX:,} of the int32 env-step counter `single` keeps on device; lower --total_env_steps"
        )
    if c["updates"] > INT32_MAX:
        steps = layout.num_epochs * layout.collections_per_epoch
        raise ConfigError(
            f"num_minibatches: this run makes {c['updates']:,} updates ({steps:,} collection steps x "
            f"num_minibatches {config.num_minibatches}), past the limit {INT32_MAX:,} of the int32 update "
            "counter (TrainState.step); lower --num_minibatches or --total_env_steps"
        )


# ---------------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------------


def fmt(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _knobs(term: str, config: ConfigDict) -> list[str]:
    remat = [] if config.remat else ["--set remat=true"]
    fixed = config.topology in ("single", "actor_learner")  # else the topology sets the roles' depths
    depth, width = ("--critic_depth", "--critic_width") if fixed else ("--learner_depths", "--learner_widths")
    return {
        "replay": ["--set replay_steps_per_env", "--num_envs"],
        "train_state": [width, depth],
        "gradients": [width, depth],
        "checkpoint": [width, depth],
        "activations": ["--batch_size", *remat, depth],
        "logits": ["--batch_size"],
        "batches": ["--num_minibatches", "--batch_size"],
        "envs": ["--num_envs", "--num_eval_envs"],
    }.get(term, [])


def _detail(term: str, config: ConfigDict, env: GoalEnv) -> str:
    seeds = int(config.get("num_seeds", 1))
    each = f" x {seeds} seeds" if config.topology == "single" and seeds > 1 else ""
    if term == "replay":
        per_step = F32 * (env.spec.state_size + env.action_size + 1)
        return (
            f": replay_steps_per_env {config.replay_steps_per_env:,} x num_envs {config.num_envs:,} "
            f"x {per_step} B{each}"
        )
    remat = ", remat" if config.remat else ""
    if term == "activations" and config.topology == "single":
        shape = f"critic depth {config.critic_depth} width {config.critic_width}"
        return f" at batch {config.batch_size}, {shape}{remat}{each}"
    if term in ("activations", "logits"):
        return f" at batch {config.batch_size}{remat if term == 'activations' else ''}{each}"
    if term == "batches":
        return f": {config.num_minibatches} minibatches x batch {config.batch_size}{each}"
    return each


def _message(items: dict, need: int, have: str, config: ConfigDict, env: GoalEnv) -> str:
    top = sorted(items.items(), key=lambda kv: -kv[1])
    parts = [f"{LABELS.get(k, k)} {fmt(v)}{_detail(k, config, env)}" for k, v in top[:3] if v > 0]
    knobs: list[str] = []
    for k, v in top:
        if v >= need / 10:  # the knobs of the items that matter, the biggest item's first
            knobs += [x for x in _knobs(k, config) if x not in knobs]
    if int(config.get("num_seeds", 1)) > 1 and config.topology == "single":
        knobs.append("--num_seeds")
    remat = ", or --set remat=true" if "--set remat=true" in knobs[:4] else ""
    lower = " / ".join(k for k in knobs[:4] if k != "--set remat=true") or "the sizes"
    return (
        f"this run needs ~{fmt(need)} ({'; '.join(parts)}), but {have}; lower {lower}{remat} "
        "(--set memory_check=false skips this check)"
    )


def _sum_items(roles: dict, where: str) -> dict:
    """Bytes per item over all roles (``where``: 'host' or 'device')."""
    out: dict[str, int] = {}
    for r in roles.values():
        for k, v in r[where].items():
            out[k] = out.get(k, 0) + v
    return out


def check(exp: Experiment) -> dict:
    """Counts and memory of the run against this machine; ConfigError (one line) if it cannot fit.

    Returns the estimate with the limits it was checked against (what ``config.json`` records).
    """
    config, env = exp.config, exp.env()
    check_counts(config, exp.layout)
    single = not exp.distributed
    device_limit = accelerator_limit() if single else None
    est = estimate(exp, accelerator=device_limit is not None)
    host, source = host_available()
    est.update(host_limit_bytes=host, host_limit_source=source, device_limit_bytes=device_limit)
    if not bool(config.get("memory_check", True)):
        est["checked"] = "no (memory_check=false)"
        return est
    if config.get("ray_address") and not single:
        est["checked"] = "at launch, the largest role against the Ray cluster's nodes"
        return est
    roles = est["roles"]
    if device_limit is not None and est["device_bytes"] > device_limit:
        have = f"the {jax.local_devices()[0].platform.upper()} has {fmt(device_limit)} (XLA's bytes_limit)"
        raise ConfigError(_message(_sum_items(roles, "device"), est["device_bytes"], have, config, env))
    if est["host_bytes"] > host:
        have = f"this machine has {fmt(host)} available ({source})"
        raise ConfigError(_message(_sum_items(roles, "host"), est["host_bytes"], have, config, env))
    checked = ["host RAM"] + (["device memory"] if device_limit is not None else [])
    if not single and est["device_bytes"]:
        total = gpu_total()
        for name, r in roles.items():
            if not r["device"] or not total:
                continue
            gpus = float(config.gpus_per_collector if name == "collector" else config.gpus_per_learner)
            need = sum(r["device"].values())
            share = int(min(0.95, 0.9 * gpus) * total)  # the XLA memory fraction the role is started with
            if need > share:
                have = f"its share of the GPU is {fmt(share)} ({gpus:g} GPUs of {fmt(total)})"
                raise ConfigError(f"role {name}: " + _message(r["device"], need, have, config, env))
        if total:
            checked.append("each GPU role's share of the GPU")
    est["checked"] = " and ".join(checked)
    return est


def check_nodes(est, nodes: list[dict]) -> None:
    """On an existing Ray cluster: the largest role must fit the largest live node's ``memory`` resource.

    ``est`` is ``check``'s result (a dict, or the ConfigDict ``config.memory_estimate`` holds), or None.
    """
    est = est.to_dict() if hasattr(est, "to_dict") else est
    if not est or not est.get("roles") or str(est.get("checked", "")).startswith("no"):
        return
    sizes = [n.get("Resources", {}).get("memory", 0) for n in nodes if n.get("Alive", True)]
    if not sizes or not max(sizes):
        return
    need, name = max((sum(r["host"].values()), name) for name, r in est["roles"].items())
    if need > max(sizes):
        raise ConfigError(
            f"role {name} needs ~{fmt(need)} of host RAM, but the largest node of the Ray cluster offers "
            f"{fmt(max(sizes))} (Ray's memory resource); lower --set replay_steps_per_env / --num_envs / "
            "--batch_size, or --set memory_check=false to skip this check"
        )


def table(est: dict) -> str:
    """The estimate as a small text table (``run.py --dry_run``)."""
    terms = [t for t in LABELS if any(t in r["host"] or t in r["device"] for r in est["roles"].values())]
    rows = [["role", "memory", *[LABELS[t] for t in terms], "total"]]
    for name, r in est["roles"].items():
        for where in ("host", "device"):
            if r[where]:
                cells = [fmt(r[where][t]) if t in r[where] else "-" for t in terms]
                rows.append([name, where, *cells, fmt(sum(r[where].values()))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    c = est["counts"]
    lines.append(f"env steps {c['env_steps']:,}; updates {c['updates']:,} per learner")
    lines.append(
        f"host RAM: needs ~{fmt(est['host_bytes'])}, {fmt(est['host_limit_bytes'])} available ({est['host_limit_source']})"
    )
    if est.get("device_limit_bytes"):
        each = f" on each of {est['num_devices']} devices" if est.get("num_devices", 1) > 1 else ""
        lines.append(f"device: needs ~{fmt(est['device_bytes'])}{each}, limit {fmt(est['device_limit_bytes'])}")
    lines.append(f"checked: {est.get('checked', 'no')}")
    return "\n".join(lines)
