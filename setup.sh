#!/usr/bin/env bash
# Creates .venv/ in the repo root and installs the project with the pinned,
# tested dependency set (constraints.txt). Re-running is cheap: it reinstalls
# only when pyproject.toml or constraints.txt changed. `--gpu` adds jax[cuda12].
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (dm-reverb 0.14, TF 2.15)"'
# Headless rendering (launch/render.py) needs EGL or OSMesa from the system (see envs/README.md).
GL_PKGS="libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6"
if ! { ldconfig -p | grep -q libEGL.so.1 && ldconfig -p | grep -q libOSMesa.so; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq $GL_PKGS >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $GL_PKGS; }
  else
    echo "note: rendering needs system OpenGL libraries: sudo apt-get install -y $GL_PKGS" >&2
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
extras="dev"
[ "${1:-}" = "--gpu" ] && extras="dev,cuda12"
stamp=".venv/.deepcrl-install-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)-${extras}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # mujoco 4 ships its files in the extra packages mujoco-core/-studio; remove them so
  # they cannot shadow the pinned 3.x pair (one MuJoCo/MJX release line).
  if .venv/bin/python -m pip show -q mujoco-core >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -y -q mujoco mujoco-core mujoco-studio
  fi
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[${extras}]"
  rm -f .venv/.deepcrl-install-*
  touch "$stamp"
fi
