#!/usr/bin/env bash
# The whole test suite, each test once, on the two tested sets:
#   - today's JAX, Flax, Optax, Brax, MuJoCo and Ray (.venv-latest/, Python 3.12: what GPU hosts, aarch64
#     nodes and Macs run): the core's tests (marker core) and the distributed tests marked ray_lane, whose
#     runs use the Ray replay backend there;
#   - the pinned set (.venv/, Python 3.11): every other test, the distributed ones on Reverb.
# The latest set installs in the background while the pinned tests run. Without Python 3.12 the core's
# tests run on the pinned set instead, and a note says so. Arguments go to both pytest runs
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

.venv/bin/python -m pytest -q -m "not core" "$@"
pinned=$?

wait "$installing"
installed=$?
if [ "$installed" = 0 ]; then
  # These two import Reverb at the top (none of their tests is core or ray_lane).
  .venv-latest/bin/python -m pytest -q -m "core or ray_lane" \
    --ignore=tests/test_reverb_replay.py --ignore=tests/test_replay_checkpoints.py "$@"
  latest=$?
elif [ "$installed" = 2 ]; then
  echo "note: $(tail -1 "$log"); the core's tests run on the pinned set instead" >&2
  .venv/bin/python -m pytest -q -m core "$@"
  latest=$?
else
  cat "$log" >&2
  echo "error: ./setup.sh --latest failed (exit $installed)" >&2
  latest=$installed
fi
rm -f "$log"
[ "$pinned" = 0 ] && [ "$latest" = 0 ]
