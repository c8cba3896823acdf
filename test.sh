#!/usr/bin/env bash
# The whole test suite, each test once, on the two tested sets:
#   - today's JAX, Flax, Optax, Brax, MuJoCo and Ray (.venv-latest/, Python 3.12: what GPU hosts, aarch64
#     nodes and Macs run): the core's tests (marker core) and the distributed tests marked ray_lane, whose
#     runs use the Ray replay backend there;
#   - the pinned set (.venv/, Python 3.11): every other test, the distributed ones on Reverb.
# The latest set installs in the background while the pinned tests run. Without Python 3.12 the core's
# tests run on the pinned set instead, and a note says so. The core's tests run on both cores (xdist). Arguments go to both pytest runs
# (e.g. -x, -k NAME, --replay-backends all). `.venv/bin/python -m pytest -q` alone runs every test on
# the pinned set.
set -uo pipefail
cd "$(dirname "$0")"
./setup.sh || exit $?
log=$(mktemp)
# At the lowest CPU and I/O priority: the pinned tests, some of them timed, come first.
low=(nice -n 19)
command -v ionice >/dev/null 2>&1 && low+=(ionice -c 3)
"${low[@]}" ./setup.sh --latest >"$log" 2>&1 &
installing=$!

# The pinned set's tests that are in-process or a single run first, on both cores (pytest-xdist, a test
# file per worker, so a file's session fixtures are built once) while the latest set installs; then the
# distributed ones (marker serial), whose processes watch each other's progress: one at a time.
.venv/bin/python -m pytest -q -n 2 --dist loadfile -m "not core and not serial" "$@"
pinned=$?
.venv/bin/python -m pytest -q -m "not core and serial" "$@"
serial=$?

wait "$installing"
installed=$?
# The core's tests (in-process math and single runs, none timed) on both cores; the Ray lane one at a time.
core=(-n 2 --dist loadfile -m core)
if [ "$installed" = 0 ]; then
  # These two import Reverb at the top (none of their tests is core or ray_lane).
  skip=(--ignore=tests/test_reverb_replay.py --ignore=tests/test_replay_checkpoints.py)
  .venv-latest/bin/python -m pytest -q "${core[@]}" "${skip[@]}" "$@"
  latest=$?
  .venv-latest/bin/python -m pytest -q -m "ray_lane and not core" "${skip[@]}" "$@"
  ray_lane=$?
elif [ "$installed" = 2 ]; then
  echo "note: $(tail -1 "$log"); the core's tests run on the pinned set instead" >&2
  .venv/bin/python -m pytest -q "${core[@]}" "$@"
  latest=$?
  ray_lane=0
else
  cat "$log" >&2
  echo "error: ./setup.sh --latest failed (exit $installed)" >&2
  latest=$installed
  ray_lane=0
fi
rm -f "$log"
# Exit 5 is pytest's "no test selected" (an -k that matches tests of one run only).
passed() { [ "$1" = 0 ] || [ "$1" = 5 ]; }
passed "$pinned" && passed "$serial" && passed "$latest" && passed "$ray_lane"
