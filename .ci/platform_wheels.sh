#!/usr/bin/env bash
# Does every pin of constraints-latest.txt exist as a wheel for aarch64 Linux (glibc 2.28) and macOS arm64?
# This machine runs neither, so pip is asked to download each pin as a binary for those platforms
# (every manylinux tag a glibc-2.28 system accepts; macOS 11-15). Not run by .ci/run (about 670 MB).
# Usage: bash .ci/platform_wheels.sh [OUT_DIR]   (needs .venv-latest: ./setup.sh --latest)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/deepcrl-platform-wheels}
pins=$(mktemp); grep -v '^#' constraints-latest.txt > "$pins"
status=0
for plat in linux-aarch64 macos-arm64; do
  tags=()
  if [ "$plat" = linux-aarch64 ]; then
    for v in 2_17 2_24 2_26 2_27 2_28; do tags+=(--platform "manylinux_${v}_aarch64"); done
    tags+=(--platform manylinux2014_aarch64)
  else
    for v in 11_0 12_0 13_0 14_0 15_0; do tags+=(--platform "macosx_${v}_arm64"); done
  fi
  if PIP_CONSTRAINT= .venv-latest/bin/python -m pip download -q --no-deps --only-binary=:all: "${tags[@]}" \
      --python-version 3.12 --implementation cp -d "$out/$plat" -r "$pins"; then
    echo "$plat: all $(wc -l < "$pins") pins resolve as wheels ($(ls "$out/$plat" | wc -l) files)"
  else
    echo "$plat: some pins have no wheel (see pip's error above)"; status=1
  fi
done
rm -f "$pins"
exit $status
