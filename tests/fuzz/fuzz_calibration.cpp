// libFuzzer target: the calibration file reader (TeaCache's coefficients, MagCache's ratios, a
// searched threshold: text written by `cachelab calibrate`, read by the policies). The input is
// written to a file, read with the digest it is most likely to carry and parsed as numbers; bad
// input must end in a cachelab::Error naming the file. Built with -DCACHELAB_FUZZ=ON (clang,
// ASan + UBSan: the reader is torch-free); the ctest entry `fuzz_calibration_corpus` replays
// tests/fuzz/corpus/calibration.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "framework/calibration_file.h"
#include "framework/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/cachelab_fuzz_calibration." + std::to_string(::getpid()) + ".txt";
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    auto lines = cachelab::read_calibration_file(path, "0123456789abcdef", "fuzz");
    (void)cachelab::calibration_numbers(lines, path, "fuzz");
  } catch (const cachelab::Error&) {
  }
  std::remove(path.c_str());
  return 0;
}
