#include "framework/system_info.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/version.h>
#include <malloc.h>
#include <dlfcn.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "framework/paths.h"

namespace cachelab {
namespace {

std::string run_command(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    std::array<char, 256> buf;
    while (fgets(buf.data(), buf.size(), p)) out += buf.data();
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// The BLAS shared object mapped into this process, resolved through the alternatives links.
std::string loaded_blas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto pos = line.find('/');
    if (pos == std::string::npos) continue;
    std::string path = line.substr(pos);
    auto base = std::filesystem::path(path).filename().string();
    if (base.rfind("libblas", 0) == 0 || base.rfind("libopenblas", 0) == 0 || base.rfind("libmkl_rt", 0) == 0) {
      std::error_code ec;
      auto real = std::filesystem::canonical(path, ec);
      return ec ? path : real.string();
    }
  }
  return "unknown";
}

// "<model> | avx2 avx512f ... | openblas <core>[ (OPENBLAS_CORETYPE=X)]".
std::string cpu_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model = "unknown cpu", flags;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && model == "unknown cpu") model = value;
    if (key == "flags" && flags.empty()) flags = " " + value + " ";
    if (!flags.empty() && model != "unknown cpu") break;
  }
  std::string kept;
  for (const char* f : {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16"})
    if (flags.find(std::string(" ") + f + " ") != std::string::npos) kept += std::string(kept.empty() ? "" : " ") + f;
  std::string out = model + " | " + (kept.empty() ? "no avx2" : kept);
  // OpenBLAS picks its kernels at load time from the CPU (or OPENBLAS_CORETYPE).
  using CoreName = char* (*)();
  if (auto fn = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"))) {
    out += std::string(" | openblas ") + fn();
    if (const char* forced = std::getenv("OPENBLAS_CORETYPE")) out += std::string(" (OPENBLAS_CORETYPE=") + forced + ")";
  }
  return out;
}

}  // namespace

void tune_allocator() {
  // glibc serves large blocks with mmap and returns freed memory to the kernel, so every
  // step of a sampling loop page-faults its activations in afresh: measured here, that
  // made a DiT forward 2.8x slower. Keep freed memory in the process instead.
  static bool done = false;
  if (done) return;
  done = true;
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

SystemInfo system_info(int threads) {
  tune_allocator();
  if (threads > 0) at::set_num_threads(threads);
  SystemInfo s;
  s.threads = at::get_num_threads();
  s.blas = loaded_blas();
  // PyTorch's own LibTorch links MKL statically: no BLAS object is mapped, and MKL is fast.
  if (s.blas == "unknown" && at::hasMKL()) s.blas = "mkl (linked into LibTorch)";
  s.blas_is_reference = s.blas.find("/blas/") != std::string::npos ||
                        (s.blas.find("openblas") == std::string::npos && s.blas.find("mkl") == std::string::npos);
  s.torch_version = TORCH_VERSION;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  s.host = host;
  s.cpu = cpu_description();
  const std::string root = project_root();
  s.git_sha = run_command("git -C '" + root + "' rev-parse --short=12 HEAD 2>/dev/null");
  if (s.git_sha.empty()) s.git_sha = "unknown";
  s.git_dirty = !run_command("git -C '" + root + "' status --porcelain --untracked-files=no 2>/dev/null").empty();
  return s;
}

std::string describe(const SystemInfo& s) {
  std::string line = "[cachelab] torch " + s.torch_version + ", " + std::to_string(s.threads) + " thread(s), BLAS " +
                     s.blas + ", git " + s.git_sha + (s.git_dirty ? " (dirty)" : "");
  if (!s.cpu.empty()) line += "\n[cachelab] cpu " + s.cpu;
  if (s.blas_is_reference)
    line += "\n[cachelab] WARNING: LibTorch runs on a slow BLAS (" + s.blas +
            "); GEMMs are ~30x slower than with OpenBLAS. Run `bash tools/setup.sh` (it selects "
            "libopenblas0-openmp with update-alternatives).";
  return line;
}

std::string utc_now_iso() {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

namespace {

// A `Key:  N kB` line of /proc/self/status, in bytes; -1 where it cannot be read.
double status_bytes(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  double kb = -1;
  const size_t n = std::strlen(key);
  while (std::fgets(line, sizeof line, f))
    if (!std::strncmp(line, key, n)) kb = std::atof(line + n);
  std::fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

}  // namespace

double peak_resident_bytes() { return status_bytes("VmHWM:"); }
double resident_bytes() { return status_bytes("VmRSS:"); }

}  // namespace cachelab
