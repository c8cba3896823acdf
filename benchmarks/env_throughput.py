"""Environment steps per second, per env, with many envs in parallel.

    python benchmarks/env_throughput.py                 # every env, 256 envs, 100 steps
    python benchmarks/env_throughput.py --envs ant,humanoid --num_envs 1024

Each env runs inside ``VectorEnv`` (the training view: vmapped, truncation,
fresh auto-resets) under one jitted ``lax.scan`` of ``--steps`` steps with
uniform random actions. Compilation is timed separately; the throughput is
the best of ``--repeats`` timed runs after it. Besides wall-clock steps/s it
reports steps per CPU-second of this process (all its threads), which moves
much less than wall time when other jobs share the machine.
"""

from __future__ import annotations

import platform
import time

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from deepcrl import envs  # noqa: E402
from deepcrl.envs.wrappers import VectorEnv  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("envs", "all", "Comma-separated env names, or 'all'.")
flags.DEFINE_integer("num_envs", 256, "Parallel envs.")
flags.DEFINE_integer("steps", 100, "Steps per timed scan.")
flags.DEFINE_integer("repeats", 2, "Timed runs after compilation (best is reported).")
flags.DEFINE_string("backend", None, "Override every env's default backend.")


def measure(name: str, num_envs: int, steps: int, repeats: int, backend: str | None) -> dict:
    env = envs.make_env(name, **({"backend": backend} if backend else {}))
    venv = VectorEnv(env, num_envs)

    def run(state, key):
        def body(state, k):
            action = jax.random.uniform(k, (num_envs, env.action_size), minval=-1.0, maxval=1.0)
            return venv.step(state, action), None

        return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

    run = jax.jit(run)
    state = jax.jit(venv.reset)(jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    state = run(state, jax.random.PRNGKey(1))
    jax.block_until_ready(state.obs)
    compile_s = time.perf_counter() - t0
    best, best_cpu = float("inf"), float("inf")
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        state = run(state, jax.random.PRNGKey(2 + r))
        jax.block_until_ready(state.obs)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {
        "env": name,
        "backend": env.backend,
        "compile_s": compile_s,
        "steps_per_s": num_envs * steps / best,
        "steps_per_cpu_s": num_envs * steps / best_cpu,
    }


def main(argv: list[str]) -> None:
    del argv
    names = envs.env_names() if FLAGS.envs == "all" else FLAGS.envs.split(",")
    unknown = [n for n in names if n not in envs.env_names()]
    if unknown:
        raise app.UsageError(f"unknown envs {unknown}; valid: {', '.join(envs.env_names())}")
    print(
        f"# {FLAGS.num_envs} envs × {FLAGS.steps} steps, jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"| {'env':<18} | {'backend':<7} | {'compile s':>9} | {'env steps/s':>11} | {'steps/CPU-s':>11} |")
    print(f"|{'-' * 20}|{'-' * 9}|{'-' * 11}|{'-' * 13}|{'-' * 13}|")
    for name in names:
        r = measure(name, FLAGS.num_envs, FLAGS.steps, FLAGS.repeats, FLAGS.backend)
        print(
            f"| {r['env']:<18} | {r['backend']:<7} | {r['compile_s']:>9.1f} | {r['steps_per_s']:>11,.0f} "
            f"| {r['steps_per_cpu_s']:>11,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
