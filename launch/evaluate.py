"""Evaluate a run's trained policy, and export it as one self-contained file.

    python launch/evaluate.py --run_dir runs/my_run [--learner learner1_d4] [--env E] [--episodes 64]
    python launch/evaluate.py --run_dir runs/my_run --export policy.deepcrl

Prints which checkpoint it used and the evaluation (one episode on each of ``--episodes`` envs, the
metrics of training's ``eval/`` fields), and writes it to ``RUN/evaluations/<time>-<learner>-<env>.json``.
``--export PATH`` writes the policy (parameters, network, observation layout, origin) that
``deepcrl.load_policy(PATH)`` reads without the run directory. A directory with no run or no usable
checkpoint, or an unknown learner or env, is one ``error:`` line, exit 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from absl import flags

from deepcrl import envs
from deepcrl.launch.api import load
from deepcrl.launch.cli import UsageError, run_main
from deepcrl.rundir.checkpoints import CheckpointError

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Run directory whose policy to evaluate.")
flags.DEFINE_string("learner", None, "Which learner of a distributed run (default: the driving one).")
flags.DEFINE_integer("seed_index", 0, "Which seed of a --num_seeds K run.")
flags.DEFINE_string("env", None, "Evaluate on this env (default: the run's evaluation env).")
flags.DEFINE_integer("episodes", 0, "Episodes, one per env (default: the run's num_eval_envs).")
flags.DEFINE_integer("seed", 0, "Seed of the evaluation's resets.")
flags.DEFINE_string("export", None, "Also write the policy to this file (deepcrl.load_policy reads it).")


def main(argv) -> int:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.run_dir:
        raise UsageError("give --run_dir RUN (a run directory)")
    if FLAGS.env and FLAGS.env not in envs.env_names():
        raise UsageError(f"unknown env {FLAGS.env!r}; valid: {', '.join(envs.env_names())}")
    try:
        run = load(FLAGS.run_dir, FLAGS.learner, FLAGS.seed_index)
        checkpoint = run.checkpoint
        result = run.evaluate(FLAGS.episodes or None, env=FLAGS.env, seed=FLAGS.seed)
    except (CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from None
    env = FLAGS.env or str(run.config.get("eval_env", "") or run.config.env)
    print(f"{run.learner} of {run.run_dir}, checkpoint {checkpoint}, on {env}:")
    print("  " + ", ".join(f"{k.removeprefix('eval/')} {v:.4g}" for k, v in result.items()))
    record = {"run_dir": str(run.run_dir), "learner": run.learner, "seed_index": run.seed, "checkpoint": str(checkpoint),
              "env": env, "seed": FLAGS.seed, "episodes": FLAGS.episodes or int(run.config.num_eval_envs), **result}  # fmt: skip
    out = run.run_dir / "evaluations" / f"{time.strftime('%Y%m%d-%H%M%S')}-{run.learner}-{env}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {out}")
    if FLAGS.export:
        print(f"policy exported to {run.export(Path(FLAGS.export))}")
    return 0


if __name__ == "__main__":
    run_main(main)
