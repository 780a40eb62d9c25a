#!/usr/bin/env bash
# Builds cachelab (Release, ninja, ccache, clang++ when present) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${CACHELAB_BUILD:-build}
if command -v clang++ >/dev/null; then export CXX=${CXX:-clang++} CC=${CC:-clang}; fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
start=$(date +%s)
cmake --build "$build" -j "$(nproc)"
echo "[test] build took $(( $(date +%s) - start )) s"
export OMP_WAIT_POLICY=PASSIVE
ctest --test-dir "$build" --output-on-failure
