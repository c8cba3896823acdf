"""Rollouts to pictures: MuJoCo frames with the goal marked, and top-down plots.

Rendering is host-side and offscreen: the caller must pick an OpenGL platform
(``MUJOCO_GL=egl`` or ``osmesa``) before ``mujoco`` is first imported; see
``launch/render.py`` and envs/README.md for the system packages each needs.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from deepcrl.envs.base import GoalEnv
from deepcrl.envs.maze import draw_maze

GOAL_RGBA = np.array([0.95, 0.15, 0.15, 0.45], np.float32)


def point_mass_xml(env) -> str:
    """A MuJoCo scene mirroring a PointMass env (it has no physics model itself)."""
    a = env.arena
    walls = "".join(
        f'<geom type="box" pos="{(x0 + x1) / 2} {(y0 + y1) / 2} 0.05" '
        f'size="{(x1 - x0) / 2} {(y1 - y0) / 2} 0.05" rgba="0.4 0.4 0.4 1"/>'
        for x0, y0, x1, y1 in env.walls
    )
    return f"""<mujoco><worldbody>
      <light pos="0 0 3" dir="0 0 -1" directional="true"/>
      <geom type="plane" size="{a} {a} 0.01" rgba="0.85 0.85 0.85 1"/>
      {walls}
      <body name="mass" pos="0 0 0.04"><joint type="slide" axis="1 0 0"/><joint type="slide" axis="0 1 0"/>
        <geom type="sphere" size="0.04" rgba="0.1 0.3 0.9 1"/></body>
    </worldbody></mujoco>"""


def mj_model(env: GoalEnv) -> mujoco.MjModel:
    """The MuJoCo model to draw an env with."""
    if hasattr(env, "sys"):
        return env.sys.mj_model
    return mujoco.MjModel.from_xml_string(point_mass_xml(env))


def qpos_of(env: GoalEnv, physics_state) -> np.ndarray:
    """Generalized positions of a (batch of) physics state(s), as MuJoCo's qpos."""
    if hasattr(physics_state, "q"):
        return np.asarray(physics_state.q)
    return np.asarray(physics_state)  # the point mass's state is its (x, y)


def goal_xyz(env: GoalEnv, goal: np.ndarray) -> np.ndarray:
    """A 3-D point to draw a goal at (2-D goals are lifted to the robot's height)."""
    goal = np.asarray(goal, np.float32)
    if goal.shape[-1] == 3:
        return goal
    z = 0.55 if hasattr(env, "sys") else 0.04  # ant torso height; point-mass sphere
    return np.concatenate([goal, np.full(goal.shape[:-1] + (1,), z, np.float32)], -1)


def rollout(
    env: GoalEnv,
    act_fn: Callable[[jax.Array, jax.Array], jax.Array] | None,
    episodes: int,
    steps: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Run ``episodes`` envs side by side for ``steps`` steps.

    ``act_fn(obs [E, D], key) -> actions [E, A]``; None means uniform random
    actions. Returns host arrays: qpos [T+1, E, nq], obs [T+1, E, D], goal
    [E, G] and alive [T+1, E] (False after an episode terminated early).
    """
    key = jax.random.PRNGKey(seed)
    key, reset_key = jax.random.split(key)
    reset = jax.jit(jax.vmap(env.reset))
    step = jax.jit(jax.vmap(env.step))
    state = reset(jax.random.split(reset_key, episodes))
    if act_fn is None:

        def act_fn(obs, k):
            return jax.random.uniform(k, (obs.shape[0], env.action_size), minval=-1.0, maxval=1.0)

    qpos, obs, alive = (
        [qpos_of(env, state.pipeline_state)],
        [np.asarray(state.obs)],
        [np.ones(episodes, bool)],
    )
    live = np.ones(episodes, bool)
    for _ in range(steps):
        key, k = jax.random.split(key)
        state = step(state, jnp.asarray(act_fn(state.obs, k)))
        qpos.append(qpos_of(env, state.pipeline_state))
        obs.append(np.asarray(state.obs))
        alive.append(live.copy())  # the step that terminates is still drawn
        live &= np.asarray(state.done) == 0
    return {
        "qpos": np.stack(qpos),
        "obs": np.stack(obs),
        "goal": np.asarray(state.info["goal"]),
        "alive": np.stack(alive),
    }


CAMERAS = ("track", "top")


def agent_radius(model: mujoco.MjModel, body: int = 1) -> float:
    """Radius of the robot at its rest pose: the farthest reach of its geoms from its root body."""
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    ids = [g for g in range(model.ngeom) if model.geom_bodyid[g] != 0]
    if not ids:
        return 0.1
    reach = np.linalg.norm(data.geom_xpos[ids] - data.xpos[body], axis=-1) + model.geom_rbound[ids]
    return float(reach.max())


def hide_agent(model: mujoco.MjModel) -> None:
    """Make every geom outside the world body invisible (tests compare frames with and without the agent)."""
    model.geom_rgba[model.geom_bodyid != 0, 3] = 0.0


def _camera(env: GoalEnv, qpos: np.ndarray, goal3: np.ndarray, mode: str, radius: float) -> mujoco.MjvCamera:
    """``track``: follows the robot's root body at a distance that frames it; ``top``: the whole scene."""
    cam = mujoco.MjvCamera()
    if hasattr(env, "task"):  # arm: the table is the whole scene
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = [0.0, 0.5, 0.1]
        if mode == "top":
            cam.distance, cam.azimuth, cam.elevation = 1.3, 90.0, -89.0
        else:
            cam.distance, cam.azimuth, cam.elevation = 1.4, 235.0, -30.0
        return cam
    maze = getattr(env, "maze", None)
    if mode == "track":
        cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        cam.trackbodyid = 1  # the torso (ant, humanoid) or the point mass
        cam.distance = max(2.8 * radius, 1.0)  # a small robot (point mass): show its surroundings
        cam.azimuth, cam.elevation = 90.0, -30.0
        if maze is not None:  # look down into the corridor from above the walls
            cam.elevation = -55.0
            cam.distance = max(cam.distance, (maze.wall_height + 0.5) / np.sin(np.radians(55.0)))
        return cam
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    if maze is not None:  # whole maze, seen from above at a slant
        x0, x1, y0, y1 = maze.extent
        cam.lookat[:] = [(x0 + x1) / 2, (y0 + y1) / 2, 0.0]
        cam.distance = 1.25 * max(x1 - x0, y1 - y0)
        cam.azimuth, cam.elevation = 90.0, -70.0
    elif hasattr(env, "sys"):  # open floor: keep robot and goal in view
        mid = 0.5 * (qpos[:2] + goal3[:2])
        cam.lookat[:] = [mid[0], mid[1], 0.5]
        cam.distance = 4.0 + 1.3 * float(np.linalg.norm(qpos[:2] - goal3[:2]))
        cam.azimuth, cam.elevation = 90.0, -50.0
    else:  # point mass arena
        cam.lookat[:] = [0.0, 0.0, 0.0]
        cam.distance, cam.azimuth, cam.elevation = 3.2 * env.arena, 90.0, -89.0
    return cam


def _add_sphere(scene: mujoco.MjvScene, pos: np.ndarray, radius: float, rgba: np.ndarray) -> None:
    if scene.ngeom >= scene.maxgeom:
        return
    mujoco.mjv_initGeom(
        scene.geoms[scene.ngeom],
        mujoco.mjtGeom.mjGEOM_SPHERE,
        np.array([radius, 0.0, 0.0]),
        np.asarray(pos, np.float64),
        np.eye(3).ravel(),
        rgba,
    )
    scene.ngeom += 1


def _add_flat_box(scene: mujoco.MjvScene, xy, half: float, rgba) -> None:
    if scene.ngeom >= scene.maxgeom:
        return
    mujoco.mjv_initGeom(
        scene.geoms[scene.ngeom],
        mujoco.mjtGeom.mjGEOM_BOX,
        np.array([half, half, 0.0005]),
        np.array([xy[0], xy[1], 0.0005]),
        np.eye(3).ravel(),
        np.asarray(rgba, np.float32),
    )
    scene.ngeom += 1


def _add_connector(scene: mujoco.MjvScene, kind: int, width: float, a, b, rgba) -> None:
    if scene.ngeom >= scene.maxgeom:
        return
    geom = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(geom, kind, np.zeros(3), np.zeros(3), np.eye(3).ravel(), np.asarray(rgba, np.float32))
    mujoco.mjv_connector(geom, kind, width, np.asarray(a, np.float64), np.asarray(b, np.float64))
    scene.ngeom += 1


def _mark_goal(
    scene: mujoco.MjvScene, env: GoalEnv, goal3: np.ndarray, root: np.ndarray, radius: float
) -> None:
    """The goal: a translucent sphere of the success radius; for floor goals also a red pole seen from
    afar and, while the goal is farther than the success radius, a red arrow from the robot towards it."""
    threshold = env.spec.success_threshold
    _add_sphere(scene, goal3, threshold, GOAL_RGBA)
    if env.spec.goal_size == 3:  # arm: the cube's target in space
        return
    solid = np.array([*GOAL_RGBA[:3], 0.9], np.float32)
    pole = max(3.0 * radius, 4.0 * threshold)
    base = np.array([goal3[0], goal3[1], 0.0])
    _add_connector(scene, mujoco.mjtGeom.mjGEOM_CYLINDER, 0.12 * threshold, base, base + [0, 0, pole], solid)
    to_goal = goal3[:2] - root[:2]
    dist = float(np.linalg.norm(to_goal))
    if dist > threshold:
        size = max(radius, 0.25)  # arrow scale: the robot's, at least a size seen from the camera
        start = np.array([root[0], root[1], root[2] + 0.8 * radius])
        end = start + np.array([*(to_goal / dist * min(dist, 1.5 * size)), 0.0])
        _add_connector(scene, mujoco.mjtGeom.mjGEOM_ARROW, 0.06 * size, start, end, solid)


def render_frames(
    env: GoalEnv,
    traj: dict[str, np.ndarray],
    width: int,
    height: int,
    camera: str = "track",
    agent_visible: bool = True,
) -> list[np.ndarray]:
    """RGB frames [H, W, 3] of every live step of every episode, one episode after another.

    ``camera`` is ``track`` (follows the robot) or ``top`` (the whole maze or
    arena). The goal is a translucent red sphere whose radius is the success
    threshold, with a red pole and an arrow from the robot for floor goals.
    """
    if camera not in CAMERAS:
        raise ValueError(f"unknown camera {camera!r}; valid cameras: {', '.join(CAMERAS)}")
    model = mj_model(env)
    radius = agent_radius(model)
    if not agent_visible:
        hide_agent(model)
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, height, width)
    frames = []
    try:
        qpos_all, alive, goals = traj["qpos"], traj["alive"], goal_xyz(env, traj["goal"])
        for e in range(qpos_all.shape[1]):
            for t in range(qpos_all.shape[0]):
                if not alive[t, e]:
                    break
                data.qpos[:] = qpos_all[t, e]
                mujoco.mj_forward(model, data)
                renderer.update_scene(data, camera=_camera(env, qpos_all[t, e], goals[e], camera, radius))
                if hasattr(env, "task") and not env.task.bins:
                    for xy, half, rgba in env.regions():
                        _add_flat_box(renderer.scene, xy, half, rgba)
                _mark_goal(renderer.scene, env, goals[e], data.xpos[1], radius)
                frames.append(renderer.render().copy())
    finally:
        renderer.close()
    return frames


def ffmpeg_exe() -> str | None:
    """An ffmpeg executable: imageio-ffmpeg's bundled one (a dependency), else one on PATH."""
    try:
        import imageio_ffmpeg  # local: a missing package or binary falls back to PATH below

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or no binary for this platform
        return shutil.which("ffmpeg")


def video_suffix() -> str:
    """``.mp4`` when ffmpeg is there, ``.gif`` otherwise."""
    return ".mp4" if ffmpeg_exe() else ".gif"


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: int = 20) -> Path:
    """Write ``frames`` as MP4 (H.264 through ffmpeg) or GIF (Pillow), by ``path``'s suffix.

    An ``.mp4`` asked for where no ffmpeg exists is written as ``.gif`` beside it;
    the path written is returned.
    """
    path = Path(path)
    if not frames:
        raise ValueError("no frames to write")
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"unsupported video format {path.suffix!r}; use .gif or .mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    exe = ffmpeg_exe() if suffix == ".mp4" else None
    if suffix == ".mp4" and exe:
        _write_mp4(exe, frames, path, fps)
        return path
    path = path.with_suffix(".gif")
    from PIL import Image  # local: Pillow is needed only where no ffmpeg writes MP4

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def _write_mp4(exe: str, frames: Sequence[np.ndarray], path: Path, fps: int) -> None:
    """Pipe raw RGB frames to ffmpeg (H.264, yuv420p: plays in browsers; odd sizes padded by a pixel)."""
    h, w = frames[0].shape[:2]
    cmd = [
        exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
        "-r", str(fps), "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264",
        "-pix_fmt", "yuv420p", "-crf", "18", "-movflags", "+faststart", str(path),
    ]  # fmt: skip
    data = b"".join(np.ascontiguousarray(f[..., :3], np.uint8).tobytes() for f in frames)
    proc = subprocess.run(cmd, input=data, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")


def plot_topdown(env: GoalEnv, traj: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Top-down plot: walls, each episode's path of the goal-part (x, y), start and goal."""
    import matplotlib  # local: the headless Agg backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 6))
    maze = getattr(env, "maze", None)
    if maze is not None:
        draw_maze(ax, maze)
    for x0, y0, x1, y1 in getattr(env, "walls", ()):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, color="0.35"))
    state_size = env.spec.state_size
    idx = np.asarray(env.spec.goal_indices)[:2]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for e in range(traj["obs"].shape[1]):
        live = traj["alive"][:, e]
        xy = traj["obs"][live, e, :state_size][:, idx]
        c = colors[e % len(colors)]
        ax.plot(xy[:, 0], xy[:, 1], "-", color=c, lw=1.5, label=f"episode {e}")
        ax.plot(xy[0, 0], xy[0, 1], "o", color=c, ms=7)
        ax.plot(traj["goal"][e, 0], traj["goal"][e, 1], "*", color=c, ms=16, mec="k")
    if maze is None:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title or f"{type(env).__name__}: o start, * goal")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
