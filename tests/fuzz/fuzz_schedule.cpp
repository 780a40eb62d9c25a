// libFuzzer target: the schedule file reader (YAML written by `cachelab schedule`, read by
// the `schedule` policy). The input is written to a file and read; bad input must end in a
// cachelab::Error naming the file. Built with -DCACHELAB_FUZZ=ON (clang, ASan + UBSan: the
// reader is torch-free); the ctest entry `fuzz_schedule_corpus` replays
// tests/fuzz/corpus/schedule.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "framework/error.h"
#include "framework/schedule.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/cachelab_fuzz_schedule." + std::to_string(::getpid()) + ".yaml";
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    cachelab::Schedule s = cachelab::load_schedule(path);
    (void)s.computes();
  } catch (const cachelab::Error&) {
  }
  std::remove(path.c_str());
  return 0;
}
