// NumPy .npz output (a zip of .npy files, stored uncompressed, with ZIP64 records so that
// arrays past 4 GB, such as 50,000 256x256 samples, are read by numpy.load): what the ADM
// evaluator reads (`arr_0`, uint8 NHWC). Written in pieces, so a large array never has to
// be in memory whole. Torch-free.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace cachelab {

class NpzWriter {
 public:
  // Opens `path` (written to path + ".tmp", renamed by close()) with one uint8 array `name`
  // of `shape`; write() must then be given exactly prod(shape) bytes, in C order.
  NpzWriter(const std::string& path, const std::string& name, const std::vector<int64_t>& shape);
  ~NpzWriter();
  void write(const uint8_t* data, size_t n);
  void close();

 private:
  std::string path_, name_;
  std::FILE* f_ = nullptr;
  uint64_t expected_ = 0, written_ = 0, data_start_ = 0;
  uint32_t crc_ = 0xffffffffu;
  std::string npy_header_;
};

uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t n);  // crc starts at 0xffffffff, finish with ~

}  // namespace cachelab
