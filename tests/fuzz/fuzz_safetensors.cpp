// libFuzzer target: the safetensors reader (weights, calibration tables, routers, fixtures).
// The input is written to a file and read; bad input must end in a cachelab::Error naming the
// file. Built with -DCACHELAB_FUZZ=ON (clang); the ctest entry `fuzz_safetensors_corpus`
// replays tests/fuzz/corpus/safetensors.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "framework/error.h"
#include "framework/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/cachelab_fuzz_safetensors." + std::to_string(::getpid());
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    (void)cachelab::read_safetensors(path);
  } catch (const cachelab::Error&) {
  }
  std::remove(path.c_str());
  return 0;
}
