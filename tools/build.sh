#!/usr/bin/env bash
# Configures and builds cachelab into build/ (Release, ninja, ccache; clang++ when present).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${CACHELAB_BUILD:-build}
if command -v clang++ >/dev/null; then export CXX=${CXX:-clang++} CC=${CC:-clang}; fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
start=$(date +%s)
cmake --build "$build" -j "$(nproc)"
echo "[build] $(( $(date +%s) - start )) s"
