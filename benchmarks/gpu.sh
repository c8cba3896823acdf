#!/usr/bin/env bash
# The GPU benchmark in one go (benchmarks/gpu.py: depth scaling, K seeds, a short Ant run), on a
# machine with an NVIDIA GPU and a current JAX. Uses $PYTHON (default: .venv-latest's, else python3).
# Packages the host lacks (brax, mujoco, ...) may lie as wheels in .whl/ (see docs/benchmarks.md);
# they are installed into a scratch folder, never into the host's Python.
#
#     bash benchmarks/gpu.sh [--quick] [--json out.json]
#     bash benchmarks/gpu.sh --devices [benchmarks/devices_scaling.py's flags]   # 1, 2, 4, 8 devices
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
[ -z "$PY" ] && [ -x .venv-latest/bin/python ] && PY=.venv-latest/bin/python
PY=${PY:-python3}
site=${DEEPCRL_SITE:-/tmp/deepcrl-site}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site/pkgs" .whl/*.whl
  export PYTHONPATH="$site/pkgs${PYTHONPATH:+:$PYTHONPATH}"
fi
# deepcrl itself: from this checkout when it is not installed (the folders are its subpackages).
if ! "$PY" -c 'import deepcrl.learner' 2>/dev/null; then
  mkdir -p "$site/ns" && ln -sfn "$PWD" "$site/ns/deepcrl"
  export PYTHONPATH="$site/ns${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'EOF'
import importlib.metadata as md, jax
names = ["jax", "jaxlib", "flax", "optax", "brax", "mujoco", "mujoco-mjx", "numpy"]
print("# " + ", ".join(f"{n} {md.version(n)}" for n in names) + f"; devices {jax.devices()}")
EOF
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
if [ "${1:-}" = "--devices" ]; then
  shift
  exec "$PY" benchmarks/devices_scaling.py "$@"
fi
exec "$PY" benchmarks/gpu.py "$@"
