// What the machine runs with: recorded in every run file and printed at start-up.
#pragma once
#include <string>

namespace cachelab {

struct SystemInfo {
  int threads = 1;            // intra-op threads LibTorch uses
  std::string blas;           // the BLAS library actually loaded (resolved path)
  bool blas_is_reference = false;  // the slow reference BLAS (~30x slower GEMM here)
  std::string torch_version;
  std::string host;
  // CPU model, the instruction-set flags that change float kernels (avx2, avx512f,
  // avx512_vnni, avx512_bf16, amx_*) and OpenBLAS's kernel (`openblas haswell`, with
  // OPENBLAS_CORETYPE when it forces one): results can move when these change.
  std::string cpu;
  std::string git_sha;        // of the project checkout ("unknown" outside git)
  bool git_dirty = false;
};

// Keeps freed memory in the process (glibc would page-fault every step's activations
// in afresh otherwise). system_info() calls it; idempotent.
void tune_allocator();
// Also calls tune_allocator(). Sets LibTorch's thread count (threads <= 0: keep) and describes the process.
SystemInfo system_info(int threads);
// One line for the terminal, plus a warning line when the BLAS is the slow one.
std::string describe(const SystemInfo& info);
std::string utc_now_iso();
// The process's peak resident memory so far (VmHWM), in bytes; -1 where /proc cannot tell.
double peak_resident_bytes();
// Its resident memory now (VmRSS), in bytes; -1 where /proc cannot tell.
double resident_bytes();

}  // namespace cachelab
