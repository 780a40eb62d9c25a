#!/usr/bin/env bash
# Sets everything up, builds, runs the quickstart ablation and writes its report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
export OMP_WAIT_POLICY=PASSIVE
build/cachelab run experiments/quickstart.yaml "$@"
build/cachelab report results/quickstart
echo "open results/quickstart/report/index.html"
