// libFuzzer target: the .npz reader (sample batches and reference statistics for `cachelab
// fid`). The input is written to a file, every array in it is opened and read to its end, and
// small float arrays through read_doubles; bad input must end in a cachelab::Error. Built with
// -DCACHELAB_FUZZ=ON (clang, ASan + UBSan: the reader is torch-free); the ctest entry
// `fuzz_npz_corpus` replays tests/fuzz/corpus/npz.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "framework/error.h"
#include "framework/npz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/cachelab_fuzz_npz." + std::to_string(::getpid());
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    cachelab::NpzReader r(path);
    for (const auto& name : r.names()) {
      try {
        cachelab::NpyInfo info = r.open(name);
        static uint8_t buf[1 << 16];
        while (r.read(buf, sizeof buf) > 0) {
        }
        if ((info.descr == "<f8" || info.descr == "<f4") && info.count() < (1u << 20)) (void)r.read_doubles(name);
      } catch (const cachelab::Error&) {
      }
    }
  } catch (const cachelab::Error&) {
  }
  std::remove(path.c_str());
  return 0;
}
