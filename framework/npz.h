// NumPy .npz output and input (a zip of .npy files, stored uncompressed, with ZIP64 records so that
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

// Reads NumPy .npz files (np.savez, stored; np.savez_compressed, deflated; ZIP64 for large
// arrays): the sample batches of the ADM evaluator (`arr_0` uint8 NHWC) and its reference
// statistics (`mu`, `sigma`, float64). Arrays are read in C order, in pieces.
struct NpyInfo {
  std::string descr;           // numpy dtype string: '|u1', '<f4', '<f8', ...
  std::vector<int64_t> shape;
  size_t item_size = 0;        // bytes per element
  uint64_t count() const;      // elements
};

class NpzReader {
 public:
  explicit NpzReader(const std::string& path);  // reads the zip directory; throws naming the file
  ~NpzReader();
  NpzReader(const NpzReader&) = delete;
  NpzReader& operator=(const NpzReader&) = delete;
  std::vector<std::string> names() const;       // array names (without .npy)
  bool has(const std::string& name) const;
  // Opens array `name` (C order only) and returns its header; read() then delivers its data.
  NpyInfo open(const std::string& name);
  // The next up to n bytes of the array opened last; returns how many (0 at its end).
  size_t read(uint8_t* out, size_t n);
  // The whole of a small array as float64 (from '<f4' or '<f8').
  std::vector<double> read_doubles(const std::string& name, std::vector<int64_t>* shape = nullptr);

 private:
  struct Entry {
    uint16_t method = 0;
    uint64_t compressed = 0, size = 0, offset = 0;
  };
  size_t raw(uint8_t* out, size_t n);  // decompressed entry bytes
  std::string path_;
  std::FILE* f_ = nullptr;
  std::vector<std::pair<std::string, Entry>> entries_;
  Entry cur_;
  uint64_t in_left_ = 0, out_left_ = 0;
  void* z_ = nullptr;  // z_stream for deflated entries
  std::vector<uint8_t> inbuf_;
};

uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t n);  // crc starts at 0xffffffff, finish with ~

}  // namespace cachelab
