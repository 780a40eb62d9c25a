#!/usr/bin/env bash
# Prepares the folder tools/gpu_check.sh reads on a machine without package access:
# .gpucheck/debs (Debian 12 packages, fetched here with apt-get download), src.tar.gz (this
# checkout's tracked files as they are now), data.tar.gz (the MNIST and Fashion-MNIST test splits) and a
# copy of gpu_check.sh. Then: bash .gpucheck/gpu_check.sh .gpucheck OUT on that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
b=.gpucheck
mkdir -p "$b/debs"
pkgs=(libyaml-cpp-dev libyaml-cpp0.7 libeigen3-dev nlohmann-json3-dev
  libboost1.74-dev libboost-program-options1.74-dev libboost-program-options1.74.0
  libboost-test1.74-dev libboost-test1.74.0
  libhdf5-dev libhdf5-103-1 libsz2 libaec0
  # libhdf5's runtime dependencies (libcurl and what it links), used only where missing
  libcurl4 libnghttp2-14 librtmp1 libssh2-1 libpsl5 libldap-2.5-0 libbrotli1 libsasl2-2
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libidn2-0 libunistring2
  libgnutls30 libhogweed6 libnettle8 libgmp10 libp11-kit0 libtasn1-6 libffi8 libzstd1 libcom-err2 libssl3)
[ "$(ls "$b"/debs/*.deb 2>/dev/null | wc -l)" -ge "${#pkgs[@]}" ] || (cd "$b/debs" && apt-get download "${pkgs[@]}")
git ls-files -z | tar --null -T - -czf "$b/src.tar.gz" --transform 's,^,./,'
# The revision the tree was taken from (plus a mark when it has uncommitted changes).
rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')"
tmp=$(mktemp -d); echo "$rev" > "$tmp/.gpu_check_rev"
gunzip "$b/src.tar.gz" && tar -rf "$b/src.tar" -C "$tmp" .gpu_check_rev && gzip "$b/src.tar"; rm -rf "$tmp"
data=${CACHELAB_DATA:-data}
d=$(basename "$data")
tar -czf "$b/data.tar.gz" -C "$data/.." "$d/mnist/t10k-images-idx3-ubyte" "$d/mnist/t10k-labels-idx1-ubyte" \
  "$d/fashion-mnist/t10k-images-idx3-ubyte" "$d/fashion-mnist/t10k-labels-idx1-ubyte"
cp tools/gpu_check.sh "$b/"
du -sh "$b"
