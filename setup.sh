#!/usr/bin/env bash
# Creates .venv/ in the repo root and installs the project with the pinned,
# tested dependency set (constraints.txt, Python 3.11: everything, the distributed topologies too).
# Re-running is cheap: it reinstalls only when pyproject.toml or the constraints changed.
#   ./setup.sh            the pinned set in .venv/
#   ./setup.sh --gpu      the same, plus jax[cuda12]
#   ./setup.sh --latest   today's JAX, Flax, Optax, Brax, MuJoCo and Ray (constraints-latest.txt,
#                         Python 3.12) in .venv-latest/: every topology, the distributed ones on the Ray
#                         replay backend; no Reverb, no TensorFlow. GPU hosts (aarch64 ones too) carry
#                         today's JAX: this is the set tested for them.
set -euo pipefail
cd "$(dirname "$0")"

# install VENV PYTHON CONSTRAINTS EXTRAS: a venv with the project installed editable, one tested set.
install() {
  local venv=$1 py=$2 constraints=$3 extras=$4
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  local stamp="$venv/.deepcrl-install-$(cat pyproject.toml "$constraints" | sha1sum | cut -c1-12)-${extras}"
  if [ ! -f "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    # mujoco 4 ships its files in the extra packages mujoco-core/-studio; where a set pins the 3.x
    # pair, remove them so they cannot shadow it (one MuJoCo/MJX release line).
    if grep -q '^mujoco==3' "$constraints" && "$venv/bin/python" -m pip show -q mujoco-core >/dev/null 2>&1; then
      "$venv/bin/python" -m pip uninstall -y -q mujoco mujoco-core mujoco-studio
    fi
    "$venv/bin/python" -m pip install -q -c "$constraints" -e ".[${extras}]"
    rm -f "$venv"/.deepcrl-install-*
    touch "$stamp"
  fi
}

if [ "${1:-}" = "--latest" ]; then
  PY=""
  for p in "${PYTHON_LATEST:-}" python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    if [ -n "$p" ] && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
      PY=$p
      break
    fi
  done
  [ -n "$PY" ] || { echo "error: --latest needs Python 3.12 (set PYTHON_LATEST=/path/to/python3.12)" >&2; exit 2; }
  install .venv-latest "$PY" constraints-latest.txt test,ray
  exit 0
fi

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
extras="dev,distributed"
[ "${1:-}" = "--gpu" ] && extras="dev,distributed,cuda12"
install .venv "$PY" constraints.txt "$extras"
