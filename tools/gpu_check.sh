#!/usr/bin/env bash
# Builds cachelab against the LibTorch 2.x (CUDA) of the local PyTorch install and runs the
# quickstart (or GPU_CHECK_EXPERIMENT) twice, `run.device=cpu` and `run.device=cuda`, then
# compares the two per variant (GPU_CHECK_CPU=0: the CUDA run only, e.g. the 8B LLaDA bench).
# Meant for a bare CUDA machine with PyTorch, CMake, ninja and a C++ compiler but none of the
# other libraries: they come as Debian 12 packages, unpacked with `dpkg -x` into a prefix.
#
#   bash tools/gpu_check.sh BUNDLE [OUT]
#
# BUNDLE holds debs/*.deb (yaml-cpp, HDF5 and its runtime libraries, Boost program_options and
# unit_test_framework, Eigen, nlohmann-json), optionally src.tar.gz (the tree to build; default:
# this checkout) and data.tar.gz (data/mnist/t10k-* for FID). Logs, the two index.csv files, the
# comparison and the run files go to OUT (default ./gpu_check_out).
# Environment: GPU_CHECK_TORCH_PREFIX (LibTorch's CMake prefix; default the python3 torch's),
# GPU_CHECK_STOP_AFTER=configure (test the set-up without compiling), GPU_CHECK_STD (17 | 20;
# default 17 unless the LibTorch headers refuse it), GPU_CHECK_JOBS (compile jobs, default
# nproc), GPU_CHECK_BUILD_TIMEOUT (s, 300), GPU_CHECK_RUN_TIMEOUT (s per experiment, 200),
# GPU_CHECK_DEADLINE (s since the start by which the runs must end; shortens the run limit),
# GPU_CHECK_EXTRA (more `key=value` overrides for both runs), GPU_CHECK_EXPERIMENT (the
# experiment file, default experiments/quickstart.yaml; its results folder is its file name),
# GPU_CHECK_CPU=0 (skip the CPU run and the comparison), GPU_CHECK_TESTS=1 (build every
# target and run the unit-test groups of ctest instead of the quickstart comparison;
# GPU_CHECK_TEST_TIMEOUT, s, 240).
set -uo pipefail
bundle=$(cd "${1:?usage: gpu_check.sh BUNDLE [OUT]}" && pwd)
out=${2:-$PWD/gpu_check_out}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
here=$(cd "$(dirname "$0")/.." && pwd)
work=/tmp/cachelab-gpu
prefix=$work/prefix
jobs=${GPU_CHECK_JOBS:-$(nproc)}
t0=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - t0 ))s] $*"; }

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi failed"
uname -r; ldd --version | head -1; ${CXX:-c++} --version | head -1; cmake --version | head -1
ninja --version 2>/dev/null | sed 's/^/ninja /'; nvcc --version 2>/dev/null | tail -1
python3 - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "cxx11_abi", torch._C._GLIBCXX_USE_CXX11_ABI, "prefix", torch.utils.cmake_prefix_path)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
EOF
torch_prefix=${GPU_CHECK_TORCH_PREFIX:-$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')}

stamp "unpacking $(ls "$bundle"/debs/*.deb | wc -l) Debian packages into $prefix"
rm -rf "$prefix" && mkdir -p "$prefix"
for f in "$bundle"/debs/*.deb; do dpkg -x "$f" "$prefix" || echo "dpkg -x failed: $f"; done
# Runtime libraries: the ones cachelab links, then whatever of their dependencies this machine
# lacks, as links in one folder (the machine's own copies win whenever it has them).
rt=$prefix/rt
mkdir -p "$rt"
libdirs=("$prefix/usr/lib/x86_64-linux-gnu" "$prefix/lib/x86_64-linux-gnu")
find_lib() { for d in "${libdirs[@]}"; do [ -e "$d/$1" ] && { echo "$d/$1"; return; }; done; }
for so in libhdf5_serial.so.103 libyaml-cpp.so.0.7 libboost_program_options.so.1.74.0 \
          libboost_unit_test_framework.so.1.74.0 libsz.so.2 libaec.so.0; do
  p=$(find_lib "$so"); [ -n "$p" ] && ln -sf "$p" "$rt/$so" || echo "missing in the packages: $so"
done
for round in 1 2 3 4 5 6; do
  missing=$(LD_LIBRARY_PATH=$rt ldd "$rt"/*.so* 2>/dev/null | awk '/not found/ {print $1}' | sort -u)
  [ -z "$missing" ] && break
  for so in $missing; do
    p=$(find_lib "$so")
    if [ -n "$p" ]; then ln -sf "$p" "$rt/$so"; echo "  from the packages: $so"; else echo "  NOT AVAILABLE: $so"; fi
  done
done
export LD_LIBRARY_PATH=$rt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
LD_LIBRARY_PATH=$rt ldd "$rt/libhdf5_serial.so.103" | grep -E "not found|GLIBC" || echo "  libhdf5: all dependencies resolve"

src=$here
if [ -f "$bundle/src.tar.gz" ]; then
  src=$work/src
  rm -rf "$src" && mkdir -p "$src" && tar -xzf "$bundle/src.tar.gz" -C "$src"
fi
[ -f "$bundle/data.tar.gz" ] && tar -xzf "$bundle/data.tar.gz" -C "$src"
stamp "source $src ($(cat "$src/.gpu_check_rev" 2>/dev/null || echo 'revision unknown'))"

# LibTorch newer than 2.x may require C++20 in its headers; the project defaults to C++17.
# Probe: compile one c10 header as C++17.
std=17
torch_inc=$torch_prefix/../../include
if [ -d "$torch_inc/c10" ] && ! echo '#include <c10/core/ScalarType.h>' | ${CXX:-c++} -std=c++17 -fsyntax-only -I"$torch_inc" -x c++ - 2>"$work/probe.log"; then
  echo "C++17 probe failed:"; grep -m5 error "$work/probe.log"
  echo '#include <c10/core/ScalarType.h>' | ${CXX:-c++} -std=c++20 -fsyntax-only -I"$torch_inc" -x c++ - && std=20
fi
[ -n "${GPU_CHECK_STD:-}" ] && std=$GPU_CHECK_STD
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
[ -d /usr/local/cuda/bin ] && export PATH=$PATH:/usr/local/cuda/bin
build=$work/build
stamp "configure (C++$std)"
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=$std \
  -DCMAKE_PREFIX_PATH="$prefix/usr;$torch_prefix" -DHDF5_ROOT="$prefix/usr/lib/x86_64-linux-gnu/hdf5/serial" \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_POLICY_VERSION_MINIMUM=3.5 >"$out/configure.log" 2>&1
rc=$?
grep -E "Found|Torch|HDF5|Boost|yaml|Eigen|nlohmann|CUDA|Warning|Error" "$out/configure.log" | head -40
if [ $rc -ne 0 ]; then stamp "CONFIGURE FAILED (rc $rc)"; tail -60 "$out/configure.log"; exit 1; fi
grep -E "^(HDF5_C_INCLUDE_DIR|HDF5_C_LIBRARY_hdf5|yaml-cpp_DIR|Boost_DIR|Eigen3_DIR|nlohmann_json_DIR|Torch_DIR)" "$build/CMakeCache.txt"
[ "${GPU_CHECK_STOP_AFTER:-}" = configure ] && exit 0

target=cachelab
[ "${GPU_CHECK_TESTS:-}" = 1 ] && target=all
stamp "build $target with $jobs jobs"
timeout "${GPU_CHECK_BUILD_TIMEOUT:-300}" cmake --build "$build" --target $target -j "$jobs" -- -k 0 >"$out/build.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  stamp "BUILD FAILED (rc $rc; 124 = timed out)"
  grep -E "error:|FAILED:" "$out/build.log" | head -60
  echo "--- first error in context"
  grep -m1 -n -E "error:" "$out/build.log" | cut -d: -f1 | { read -r n && sed -n "$(( n > 20 ? n - 20 : 1 )),$(( n + 30 ))p" "$out/build.log"; }
  exit 1
fi
stamp "built"
if [ "${GPU_CHECK_TESTS:-}" = 1 ]; then
  # The unit-test groups (the CLI groups need the training data, which is not carried).
  cd "$build"
  export CACHELAB_ROOT=$src OMP_WAIT_POLICY=PASSIVE
  timeout "${GPU_CHECK_TEST_TIMEOUT:-240}" ctest -R "^(framework|models|caches|metrics|quant)$" -j 5 \
    --output-on-failure >"$out/ctest.log" 2>&1
  echo "ctest exit $?"
  grep -E "Test +#|tests passed|FAILED|error" "$out/ctest.log" | head -40
  stamp "finished"
  exit 0
fi
bin=$build/cachelab
ldd "$bin" | grep -E "not found|hdf5|yaml|boost|torch_cuda|libc10" | sed 's/^/  /'
export CACHELAB_ROOT=$src OMP_WAIT_POLICY=PASSIVE
"$bin" info | head -20

# The CUDA run in this process, the CPU run beside it on its own cores (7 worker processes,
# one single-threaded run each): the machine has 16.
res=$work/results
rm -rf "$res"
cd "$src"
run_limit=${GPU_CHECK_RUN_TIMEOUT:-200}
if [ -n "${GPU_CHECK_DEADLINE:-}" ]; then  # seconds since the start by which the runs must end
  left=$(( GPU_CHECK_DEADLINE - ($(date +%s) - t0) - 20 ))
  run_limit=$(( left < run_limit ? (left < 30 ? 30 : left) : run_limit ))
fi
exp=${GPU_CHECK_EXPERIMENT:-experiments/quickstart.yaml}
name=$(basename "$exp" .yaml)
if [ "${GPU_CHECK_CPU:-1}" = 0 ]; then
  stamp "run $exp on cuda, stopped after ${run_limit}s"
  timeout "$run_limit" "$bin" run "$exp" --results "$res/cuda" run.device=cuda ${GPU_CHECK_EXTRA:-} 2>&1 | tee "$out/run_cuda.log"
  echo "cuda run exit ${PIPESTATUS[0]}"
  nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null
  cp "$res/cuda/$name/index.csv" "$out/cuda_index.csv" 2>/dev/null
  "$bin" report "$res/cuda/$name" --summary "$out/$name.json" 2>&1 | tail -2
  tar -czf "$out/results.tar.gz" -C "$res" --exclude=.cache --exclude=report --exclude='*.pt' . 2>/dev/null
  ls -la "$out"
  stamp "finished"
  exit 0
fi
stamp "run $exp: cpu (background, --jobs 7) and cuda, each stopped after ${run_limit}s"
timeout "$run_limit" "$bin" run "$exp" --results "$res/cpu" --jobs 7 \
  run.device=cpu ${GPU_CHECK_EXTRA:-} >"$out/run_cpu.log" 2>&1 &
cpu_pid=$!
timeout "$run_limit" "$bin" run "$exp" --results "$res/cuda" \
  run.device=cuda ${GPU_CHECK_EXTRA:-} 2>&1 | tee "$out/run_cuda.log"
echo "cuda run exit ${PIPESTATUS[0]}"
stamp "cuda done"
wait $cpu_pid
echo "cpu run exit $?"
stamp "cpu done"
cat "$out/run_cpu.log"
nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null

cp "$res/cpu/$name/index.csv" "$out/cpu_index.csv" 2>/dev/null
cp "$res/cuda/$name/index.csv" "$out/cuda_index.csv" 2>/dev/null
python3 - "$res" "$name" <<'EOF' | tee "$out/compare.txt"
import csv, math, os, sys
res, exp_name = sys.argv[1], sys.argv[2]
def rows(dev):
    p = os.path.join(res, dev, exp_name, "index.csv")
    return {r["variant"]: r for r in csv.DictReader(open(p))} if os.path.exists(p) else {}
cpu, cuda = rows("cpu"), rows("cuda")
keys = ["status", "psnr", "ssim", "mse", "fid", "accuracy", "final_err_rel_l1", "reuse_fraction", "wall_s",
        "speedup_wall", "speedup_flops"]
def f(v):
    try:
        return "%.5g" % float(v)
    except (TypeError, ValueError):
        return str(v)
for name in sorted(set(cpu) | set(cuda), key=lambda n: (n != "reference", n)):
    print(name)
    for k in keys:
        a, b = cpu.get(name, {}).get(k), cuda.get(name, {}).get(k)
        print("  %-18s cpu %-12s cuda %-12s" % (k, f(a), f(b)))
try:
    import h5py, numpy as np
except ImportError:
    sys.exit(0)
print("final samples (samples/x), cuda against cpu:")
for name in sorted(set(cpu) & set(cuda)):
    fa = os.path.join(res, "cpu", exp_name, cpu[name]["run_id"] + ".h5")
    fb = os.path.join(res, "cuda", exp_name, cuda[name]["run_id"] + ".h5")
    if not (os.path.exists(fa) and os.path.exists(fb)):
        continue
    with h5py.File(fa) as a, h5py.File(fb) as b:
        xa, xb = a["samples/x"][()].astype(np.float64), b["samples/x"][()].astype(np.float64)
    d = np.abs(xa - xb)
    mse = float((d ** 2).mean())
    psnr = 10 * math.log10(4.0 / mse) if mse > 0 else float("inf")  # samples in [-1, 1]
    print("  %-16s max|diff| %.3g  mean|diff| %.3g  psnr(cuda vs cpu) %.4g dB" % (name, d.max(), d.mean(), psnr))
EOF
tar -czf "$out/results.tar.gz" -C "$res" --exclude=.cache --exclude=report . 2>/dev/null
ls -la "$out"
stamp "finished"
