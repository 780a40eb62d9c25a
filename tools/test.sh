#!/usr/bin/env bash
# Builds cachelab and runs the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
export OMP_WAIT_POLICY=PASSIVE
ctest --test-dir "${CACHELAB_BUILD:-build}" --output-on-failure
