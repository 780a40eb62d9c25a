#include "framework/npz.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "framework/error.h"

namespace cachelab {
namespace {

void put(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}

// NPY 1.0: magic, version, header length, a Python dict literal padded to a multiple of 64.
std::string npy_header(const std::vector<int64_t>& shape) {
  std::string dims;
  for (auto d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() > 1) dims.erase(dims.size() - 2);
  std::string dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t pad = 64 - (10 + dict.size() + 1) % 64;
  dict += std::string(pad % 64, ' ') + "\n";
  std::string h = "\x93NUMPY";
  h.push_back('\x01'), h.push_back('\x00');
  put(h, dict.size(), 2);
  return h + dict;
}

// Local file header with a ZIP64 extra field (sizes in it; 0xffffffff in the fixed fields).
std::string local_header(const std::string& name, uint32_t crc, uint64_t size) {
  std::string h;
  put(h, 0x04034b50, 4), put(h, 45, 2), put(h, 0, 2), put(h, 0, 2);  // signature, version 4.5, flags, stored
  put(h, 0, 2), put(h, 0x21, 2);                                     // time, date (1980-01-01)
  put(h, crc, 4), put(h, 0xffffffffu, 4), put(h, 0xffffffffu, 4);
  put(h, name.size(), 2), put(h, 20, 2);
  h += name;
  put(h, 0x0001, 2), put(h, 16, 2), put(h, size, 8), put(h, size, 8);
  return h;
}

}  // namespace

uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t n) {
  static uint32_t table[256] = {0};
  if (!table[1]) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
  }
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

NpzWriter::NpzWriter(const std::string& path, const std::string& name, const std::vector<int64_t>& shape)
    : path_(path), name_(name + ".npy") {
  expected_ = 1;
  for (auto d : shape) {
    CL_CHECK(d >= 0, "npz: negative dimension in the shape of `" << name << "`");
    expected_ *= uint64_t(d);
  }
  npy_header_ = npy_header(shape);
  std::error_code ec;
  if (auto dir = std::filesystem::path(path).parent_path(); !dir.empty()) std::filesystem::create_directories(dir, ec);
  f_ = std::fopen((path + ".tmp").c_str(), "wb");
  CL_CHECK(f_, "cannot write `" << path << ".tmp`: " << std::strerror(errno));
  const std::string h = local_header(name_, 0, npy_header_.size() + expected_);
  std::fwrite(h.data(), 1, h.size(), f_);
  data_start_ = h.size();
  std::fwrite(npy_header_.data(), 1, npy_header_.size(), f_);
  crc_ = crc32_update(crc_, reinterpret_cast<const uint8_t*>(npy_header_.data()), npy_header_.size());
}

NpzWriter::~NpzWriter() {
  if (f_) {  // not closed: an error; leave no partial file behind
    std::fclose(f_);
    std::remove((path_ + ".tmp").c_str());
  }
}

void NpzWriter::write(const uint8_t* data, size_t n) {
  CL_CHECK(f_, "npz: write after close");
  CL_CHECK(written_ + n <= expected_, "npz: more bytes than the shape of `" << name_ << "` holds");
  CL_CHECK(std::fwrite(data, 1, n, f_) == n, "cannot write `" << path_ << ".tmp`: " << std::strerror(errno));
  crc_ = crc32_update(crc_, data, n);
  written_ += n;
}

void NpzWriter::close() {
  CL_CHECK(f_, "npz: closed twice");
  CL_CHECK(written_ == expected_, "npz: `" << name_ << "` got " << written_ << " of " << expected_ << " bytes");
  const uint32_t crc = ~crc_;
  const uint64_t size = npy_header_.size() + expected_;
  // The CRC goes into the local header (offset 14), now that it is known.
  std::string c;
  put(c, crc, 4);
  std::fseek(f_, 14, SEEK_SET);
  std::fwrite(c.data(), 1, 4, f_);
  std::fseek(f_, 0, SEEK_END);
  const uint64_t cd_offset = data_start_ + size;
  std::string cd;
  put(cd, 0x02014b50, 4), put(cd, 45, 2), put(cd, 45, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0x21, 2);
  put(cd, crc, 4), put(cd, 0xffffffffu, 4), put(cd, 0xffffffffu, 4);
  put(cd, name_.size(), 2), put(cd, 28, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 4);
  put(cd, 0xffffffffu, 4);  // local header offset: in the ZIP64 extra
  cd += name_;
  put(cd, 0x0001, 2), put(cd, 24, 2), put(cd, size, 8), put(cd, size, 8), put(cd, 0, 8);
  std::string end;  // ZIP64 end of central directory, its locator, then the classic end record
  const uint64_t zip64_end = cd_offset + cd.size();
  put(end, 0x06064b50, 4), put(end, 44, 8), put(end, 45, 2), put(end, 45, 2), put(end, 0, 4), put(end, 0, 4);
  put(end, 1, 8), put(end, 1, 8), put(end, cd.size(), 8), put(end, cd_offset, 8);
  put(end, 0x07064b50, 4), put(end, 0, 4), put(end, zip64_end, 8), put(end, 1, 4);
  put(end, 0x06054b50, 4), put(end, 0, 2), put(end, 0, 2), put(end, 0xffff, 2), put(end, 0xffff, 2);
  put(end, 0xffffffffu, 4), put(end, 0xffffffffu, 4), put(end, 0, 2);
  std::fwrite(cd.data(), 1, cd.size(), f_);
  const bool ok = std::fwrite(end.data(), 1, end.size(), f_) == end.size();
  const bool closed = std::fclose(f_) == 0;
  f_ = nullptr;
  CL_CHECK(ok && closed, "cannot write `" << path_ << ".tmp`: " << std::strerror(errno));
  std::filesystem::rename(path_ + ".tmp", path_);
}

}  // namespace cachelab
