"""Render rollouts of an env to a video (MP4, or GIF without ffmpeg) plus a top-down PNG.

    python launch/render.py --env ant_u4_maze --out runs/render/u4.mp4
    python launch/render.py --run_dir runs/my_run --episodes 3 --camera top --width 1280 --height 720

``--env`` acts randomly; ``--run_dir`` acts with the deterministic policy of a
run's learner (``--learner``, default the driving one; ``--seed_index`` of a
K-seed run), from its final checkpoint, else its latest; a damaged one falls back
to the one before it, with a warning. It says which checkpoint it used and prints
that policy's evaluation (``--eval_episodes``, the metrics of training's ``eval/``
fields; 0: none). A directory with no run or no usable checkpoint is an
``error:`` line, exit 2. ``--camera track`` (default) follows the
robot; ``top`` shows the whole maze or arena. Rendering is headless (MuJoCo
offscreen on EGL, falling back to OSMesa); the goal is a translucent red sphere
whose radius is the env's success threshold, with a red pole and an arrow from
the robot towards it for floor goals. MP4 needs ffmpeg, which the
imageio-ffmpeg dependency bundles; without it the video is a GIF.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The OpenGL platform must be chosen before mujoco is imported anywhere.
_GL_DEFAULTED = "MUJOCO_GL" not in os.environ
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


# Everything below comes after the GL platform is chosen (mujoco reads it when first imported).
from absl import flags  # noqa: E402

from deepcrl import envs  # noqa: E402
from deepcrl.envs.rendering import CAMERAS, plot_topdown, render_frames, rollout, video_suffix, write_video  # noqa: E402
from deepcrl.launch.api import load  # noqa: E402
from deepcrl.launch.cli import UsageError, run_main  # noqa: E402
from deepcrl.rundir.checkpoints import CheckpointError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("env", None, "Env name (random policy).")
flags.DEFINE_string("run_dir", None, "Run directory: render its deterministic policy (final, else latest checkpoint).")
flags.DEFINE_string("learner", None, "Which learner of a distributed run (default: the driving one).")
flags.DEFINE_integer("seed_index", 0, "Which seed of a --num_seeds K run.")
flags.DEFINE_integer("eval_episodes", -1, "Also evaluate the policy on this many episodes (-1: the run's "
                     "num_eval_envs; 0: no evaluation).")
flags.DEFINE_string(
    "out",
    None,
    "Output video (.mp4 or .gif). Default: runs/render/<env>.mp4 or <run_dir>/render.mp4 "
    "(.gif without ffmpeg).",
)
flags.DEFINE_string("camera", "track", "track: follow the robot; top: the whole maze or arena.")
flags.DEFINE_integer("episodes", 2, "Episodes to render (one after another).")
flags.DEFINE_integer("steps", 200, "Steps per episode (capped at the env's episode length).")
flags.DEFINE_integer("width", 640, "Frame width in pixels.")
flags.DEFINE_integer("height", 480, "Frame height in pixels.")
flags.DEFINE_integer("fps", 20, "Frames per second of the video.")
flags.DEFINE_integer("seed", 0, "Seed of resets and random actions.")
flags.DEFINE_string("backend", None, "Physics backend override (see --list_envs of run.py).")


def _probe_gl() -> str | None:
    """Create a tiny offscreen context; on failure return the error text."""
    try:
        import mujoco

        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
        renderer = mujoco.Renderer(model, 8, 8)
        renderer.close()
        return None
    except Exception as e:  # noqa: BLE001 - any GL failure means "try another platform"
        return f"{type(e).__name__}: {e}"


def _ensure_gl() -> None:
    """EGL first; if it fails and the user chose nothing, re-run once under OSMesa."""
    err = _probe_gl()
    if err is None:
        return
    if _GL_DEFAULTED and os.environ.get("MUJOCO_GL") == "egl":
        env = dict(os.environ, MUJOCO_GL="osmesa", PYOPENGL_PLATFORM="osmesa")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    raise SystemExit(
        f"error: offscreen OpenGL ({os.environ.get('MUJOCO_GL')}) failed: {err}. "
        "Install libegl1 libgl1-mesa-dri (EGL) or libosmesa6 (OSMesa); see envs/README.md"
    )


def main(argv: list[str]) -> int:
    del argv
    if bool(FLAGS.env) == bool(FLAGS.run_dir):
        print("error: give exactly one of --env or --run_dir", file=sys.stderr)
        return 2
    if FLAGS.env and FLAGS.env not in envs.env_names():
        print(f"error: unknown env {FLAGS.env!r}; valid envs: {', '.join(envs.env_names())}", file=sys.stderr)
        return 2

    if not (16 <= FLAGS.width <= 4096 and 16 <= FLAGS.height <= 4096):
        print(
            f"error: --width and --height must lie in 16..4096, got {FLAGS.width}x{FLAGS.height}",
            file=sys.stderr,
        )
        return 2
    if FLAGS.out and Path(FLAGS.out).suffix.lower() not in (".gif", ".mp4"):
        print(f"error: --out must end in .mp4 or .gif, got {FLAGS.out!r}", file=sys.stderr)
        return 2
    if FLAGS.camera not in CAMERAS:
        print(f"error: unknown camera {FLAGS.camera!r}; valid cameras: {', '.join(CAMERAS)}", file=sys.stderr)
        return 2

    act_fn, run = None, None
    if FLAGS.run_dir:
        try:  # a run dir without a run or a usable checkpoint is an error, never a random policy
            run = load(FLAGS.run_dir, FLAGS.learner, FLAGS.seed_index)
            checkpoint, act_fn = run.checkpoint, run.policy()
        except (CheckpointError, ValueError) as e:
            raise UsageError(str(e)) from None
        print(f"policy: {run.learner} of {run.run_dir}, checkpoint {checkpoint}")
        env_name, env_kwargs = str(run.config.env), {"episode_length": run.experiment.layout.episode_length}
        if run.config.backend:
            env_kwargs["backend"] = str(run.config.backend)
        out = Path(FLAGS.out or Path(FLAGS.run_dir) / f"render{video_suffix()}")
    else:
        env_name, env_kwargs = FLAGS.env, {}
        out = Path(FLAGS.out or Path("runs") / "render" / f"{env_name}{video_suffix()}")
    if FLAGS.backend:
        env_kwargs = {**env_kwargs, "backend": FLAGS.backend}

    _ensure_gl()
    try:
        env = envs.make_env(env_name, **env_kwargs)
    except ValueError as e:  # e.g. a backend the env does not support
        print(f"error: {e}", file=sys.stderr)
        return 2
    steps = min(FLAGS.steps, env.spec.episode_length)
    traj = rollout(env, act_fn, FLAGS.episodes, steps, FLAGS.seed)
    frames = render_frames(env, traj, FLAGS.width, FLAGS.height, camera=FLAGS.camera)
    out = write_video(frames, out, FLAGS.fps)  # .gif beside a .mp4 asked for without ffmpeg
    png = plot_topdown(
        env, traj, out.with_name(out.stem + "_topdown.png"), title=f"{env_name}: o start, * goal"
    )
    print(f"wrote {out} ({len(frames)} frames, {FLAGS.width}x{FLAGS.height}) and {png}")
    if run is not None and FLAGS.eval_episodes != 0:
        result = run.evaluate(FLAGS.eval_episodes if FLAGS.eval_episodes > 0 else None, seed=FLAGS.seed)
        print("evaluation: " + ", ".join(f"{k.removeprefix('eval/')} {v:.4g}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    run_main(main)
