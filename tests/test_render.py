"""A video you can see: the tracking camera frames the robot, MP4 through ffmpeg, GIF without it.

Rendering runs in a subprocess: the OpenGL platform (EGL) must be chosen before
MuJoCo is first imported, which the test session has already done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GL_ENV = dict(os.environ, MUJOCO_GL="egl", PYOPENGL_PLATFORM="egl")

# The share of pixels that change when the robot's geoms are hidden, per camera.
AGENT_SHARE = """
import json, numpy as np
from deepcrl.envs import make_env
from deepcrl.envs.rendering import render_frames, rollout
env = make_env("ant_u4_maze")
traj = rollout(env, None, episodes=1, steps=2)
share = {}
for cam in ("track", "top"):
    shown = np.stack(render_frames(env, traj, 96, 72, camera=cam)).astype(int)
    hidden = np.stack(render_frames(env, traj, 96, 72, camera=cam, agent_visible=False)).astype(int)
    share[cam] = float((np.abs(shown - hidden).sum(-1) > 30).mean())
print(json.dumps(share))
"""


def test_tracking_camera_frames_the_ant():
    res = subprocess.run(
        [sys.executable, "-c", AGENT_SHARE], capture_output=True, text=True, timeout=600, cwd=ROOT, env=GL_ENV
    )
    assert res.returncode == 0, res.stderr[-3000:]
    share = json.loads(res.stdout.strip().splitlines()[-1])
    print(share)
    assert share["track"] > 0.05, share  # the ant fills a visible part of the frame
    assert share["track"] > 5 * share["top"], share  # far more than in the whole-maze view


def test_render_cli_writes_mp4_with_the_frames_asked_for(tmp_path):
    import imageio_ffmpeg

    out = tmp_path / "pm.mp4"
    args = ["--env", "point_mass_walls", "--out", str(out), "--episodes", "1", "--steps", "5"]
    res = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "render.py"), *args, "--width", "97", "--height", "64"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=GL_ENV,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"wrote {out} (6 frames, 97x64)" in res.stdout
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8) for f in reader]
    assert meta["size"] == (98, 64)  # H.264 in yuv420p needs even sizes: padded by one column
    assert len(frames) == 6 and np.ptp(np.stack(frames)) > 0


def test_video_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch):
    from PIL import Image

    from deepcrl.envs import rendering

    monkeypatch.setattr(rendering, "ffmpeg_exe", lambda: None)
    frames = [np.full((8, 10, 3), v, np.uint8) for v in (0, 120, 250)]
    written = rendering.write_video(frames, tmp_path / "v.mp4", fps=10)
    assert written == tmp_path / "v.gif" and not (tmp_path / "v.mp4").exists()
    with Image.open(written) as im:
        assert im.size == (10, 8) and im.n_frames == 3
    assert rendering.video_suffix() == ".gif"


def test_render_rejects_bad_camera_and_size():
    for args, needle in ((["--camera", "side"], "valid cameras: track, top"), (["--width", "4"], "16..4096")):
        res = subprocess.run(
            [sys.executable, str(ROOT / "launch" / "render.py"), "--env", "point_mass", *args],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env=GL_ENV,
        )  # fmt: skip
        assert res.returncode == 2 and needle in res.stderr, res.stderr[-1000:]
