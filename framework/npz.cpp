#include "framework/npz.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

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

// ---- reading ----------------------------------------------------------------------------

namespace cachelab {
namespace {

uint64_t get(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// The value of `key` in a .npy header's Python dict literal, e.g. 'shape': (2, 3).
std::string dict_value(const std::string& dict, const std::string& key, const std::string& where) {
  const auto k = dict.find("'" + key + "'");
  CL_CHECK(k != std::string::npos, where << ": the .npy header has no '" << key << "': " << dict);
  auto v = dict.find(':', k);
  CL_CHECK(v != std::string::npos, where << ": malformed .npy header: " << dict);
  ++v;
  while (v < dict.size() && dict[v] == ' ') ++v;
  size_t end = v;
  if (v < dict.size() && dict[v] == '(') end = dict.find(')', v) + 1;
  else if (v < dict.size() && dict[v] == '\'') end = dict.find('\'', v + 1) + 1;
  else end = dict.find_first_of(",}", v);
  CL_CHECK(end != std::string::npos && end > v && end <= dict.size(), where << ": malformed .npy header: " << dict);
  return dict.substr(v, end - v);
}

}  // namespace

uint64_t NpyInfo::count() const {
  uint64_t n = 1;
  for (auto d : shape) n *= uint64_t(d);
  return n;
}

NpzReader::NpzReader(const std::string& path) : path_(path) {
  CL_CHECK(std::filesystem::is_regular_file(path), "npz file `" << path << "` not found");
  f_ = std::fopen(path.c_str(), "rb");
  CL_CHECK(f_, "cannot read `" << path << "`: " << std::strerror(errno));
  const uint64_t file_size = std::filesystem::file_size(path);
  // The end-of-central-directory record is in the last 64 KiB + 22 bytes.
  const uint64_t tail = std::min<uint64_t>(file_size, 65557);
  std::vector<uint8_t> buf(tail);
  std::fseek(f_, long(file_size - tail), SEEK_SET);
  CL_CHECK(std::fread(buf.data(), 1, tail, f_) == tail, "`" << path << "`: read error");
  int64_t eocd = -1;
  for (int64_t i = int64_t(tail) - 22; i >= 0; --i)
    if (get(&buf[size_t(i)], 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  CL_CHECK(eocd >= 0, "`" << path << "` is not an .npz (zip) file: no end of central directory");
  uint64_t count = get(&buf[size_t(eocd) + 10], 2), cd_size = get(&buf[size_t(eocd) + 12], 4),
           cd_offset = get(&buf[size_t(eocd) + 16], 4);
  if (cd_offset == 0xffffffffu || count == 0xffff) {  // ZIP64: locator just before the EOCD
    CL_CHECK(eocd >= 20 && get(&buf[size_t(eocd) - 20], 4) == 0x07064b50, "`" << path << "`: ZIP64 locator missing");
    const uint64_t rec = get(&buf[size_t(eocd) - 12], 8);
    uint8_t z[56];
    std::fseek(f_, long(rec), SEEK_SET);
    CL_CHECK(std::fread(z, 1, 56, f_) == 56 && get(z, 4) == 0x06064b50, "`" << path << "`: bad ZIP64 record");
    count = get(z + 32, 8), cd_size = get(z + 40, 8), cd_offset = get(z + 48, 8);
  }
  CL_CHECK(cd_offset + cd_size <= file_size, "`" << path << "` is truncated (central directory past the end)");
  std::vector<uint8_t> cd(cd_size);
  std::fseek(f_, long(cd_offset), SEEK_SET);
  CL_CHECK(std::fread(cd.data(), 1, cd_size, f_) == cd_size, "`" << path << "`: read error");
  size_t p = 0;
  for (uint64_t i = 0; i < count; ++i) {
    CL_CHECK(p + 46 <= cd.size() && get(&cd[p], 4) == 0x02014b50, "`" << path << "`: corrupt central directory");
    Entry e;
    e.method = uint16_t(get(&cd[p + 10], 2));
    e.compressed = get(&cd[p + 20], 4), e.size = get(&cd[p + 24], 4), e.offset = get(&cd[p + 42], 4);
    const size_t n = get(&cd[p + 28], 2), m = get(&cd[p + 30], 2), c = get(&cd[p + 32], 2);
    CL_CHECK(p + 46 + n + m + c <= cd.size(), "`" << path << "`: corrupt central directory");
    std::string name(reinterpret_cast<const char*>(&cd[p + 46]), n);
    for (size_t x = p + 46 + n; x + 4 <= p + 46 + n + m;) {  // ZIP64 extra: the fields that overflowed, in order
      const uint64_t id = get(&cd[x], 2), len = get(&cd[x + 2], 2);
      size_t q = x + 4;
      if (id == 1) {
        for (uint64_t* field : {&e.size, &e.compressed, &e.offset})
          if (*field == 0xffffffffu && q + 8 <= x + 4 + len) *field = get(&cd[q], 8), q += 8;
      }
      x += 4 + len;
    }
    p += 46 + n + m + c;
    CL_CHECK(name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0,
             "`" << path << "` holds `" << name << "`, which is not a .npy array");
    CL_CHECK(e.method == 0 || e.method == 8, "`" << path << "`: `" << name << "` uses zip compression method " << e.method
                                                 << "; only stored (np.savez) and deflated (np.savez_compressed) are read");
    entries_.emplace_back(name.substr(0, name.size() - 4), e);
  }
}

NpzReader::~NpzReader() {
  if (z_) {
    inflateEnd(static_cast<z_stream*>(z_));
    delete static_cast<z_stream*>(z_);
  }
  if (f_) std::fclose(f_);
}

std::vector<std::string> NpzReader::names() const {
  std::vector<std::string> out;
  for (auto& [n, e] : entries_) out.push_back(n);
  return out;
}

bool NpzReader::has(const std::string& name) const {
  for (auto& [n, e] : entries_)
    if (n == name) return true;
  return false;
}

size_t NpzReader::raw(uint8_t* out, size_t n) {
  n = size_t(std::min<uint64_t>(n, out_left_));
  if (n == 0) return 0;
  if (cur_.method == 0) {
    CL_CHECK(std::fread(out, 1, n, f_) == n, "`" << path_ << "` is truncated");
    out_left_ -= n;
    return n;
  }
  auto* z = static_cast<z_stream*>(z_);
  z->next_out = out;
  z->avail_out = uInt(n);
  while (z->avail_out > 0) {
    if (z->avail_in == 0) {
      const size_t k = size_t(std::min<uint64_t>(inbuf_.size(), in_left_));
      CL_CHECK(k > 0 && std::fread(inbuf_.data(), 1, k, f_) == k, "`" << path_ << "` is truncated");
      in_left_ -= k;
      z->next_in = inbuf_.data();
      z->avail_in = uInt(k);
    }
    const int rc = inflate(z, Z_NO_FLUSH);
    CL_CHECK(rc == Z_OK || rc == Z_STREAM_END, "`" << path_ << "`: corrupt deflate data (zlib " << rc << ")");
    if (rc == Z_STREAM_END) break;
  }
  const size_t got = n - z->avail_out;
  CL_CHECK(got == n, "`" << path_ << "`: the compressed data ends early");
  out_left_ -= got;
  return got;
}

NpyInfo NpzReader::open(const std::string& name) {
  const Entry* e = nullptr;
  for (auto& [n, en] : entries_)
    if (n == name) e = &en;
  if (!e) {
    std::string all;
    for (auto& n : names()) all += (all.empty() ? "" : ", ") + n;
    CL_FAIL("`" << path_ << "` has no array `" << name << "` (it holds: " << all << ")");
  }
  cur_ = *e;
  uint8_t lh[30];
  std::fseek(f_, long(e->offset), SEEK_SET);
  CL_CHECK(std::fread(lh, 1, 30, f_) == 30 && get(lh, 4) == 0x04034b50, "`" << path_ << "`: bad local header of `" << name << "`");
  std::fseek(f_, long(get(lh + 26, 2) + get(lh + 28, 2)), SEEK_CUR);
  in_left_ = e->compressed;
  out_left_ = e->size;
  if (e->method == 8) {
    if (!z_) z_ = new z_stream{};
    auto* z = static_cast<z_stream*>(z_);
    inflateEnd(z);
    *z = z_stream{};
    CL_CHECK(inflateInit2(z, -MAX_WBITS) == Z_OK, "zlib: inflateInit2 failed");
    inbuf_.resize(1 << 20);
  }
  const std::string where = "`" + path_ + "`, array `" + name + "`";
  uint8_t pre[12];
  CL_CHECK(raw(pre, 10) == 10 && std::memcmp(pre, "\x93NUMPY", 6) == 0, where << ": not a .npy array");
  size_t header_len = get(pre + 8, 2);
  if (pre[6] >= 2) {
    CL_CHECK(raw(pre + 10, 2) == 2, where << ": truncated .npy header");
    header_len = get(pre + 8, 4);
  }
  CL_CHECK(header_len < (1u << 20), where << ": .npy header too long");
  std::string dict(header_len, '\0');
  CL_CHECK(raw(reinterpret_cast<uint8_t*>(&dict[0]), header_len) == header_len, where << ": truncated .npy header");
  NpyInfo info;
  std::string descr = dict_value(dict, "descr", where);
  info.descr = descr.size() >= 2 ? descr.substr(1, descr.size() - 2) : descr;
  static const std::map<std::string, size_t> sizes = {{"|u1", 1}, {"<f4", 4}, {"<f8", 8}, {"<i8", 8}, {"<i4", 4}, {"|b1", 1}};
  auto it = sizes.find(info.descr);
  CL_CHECK(it != sizes.end(), where << ": dtype " << info.descr << " is not read (uint8, float32/64, int32/64, bool)");
  info.item_size = it->second;
  CL_CHECK(dict_value(dict, "fortran_order", where) == "False", where << ": Fortran-ordered arrays are not read");
  std::string shape = dict_value(dict, "shape", where);
  for (size_t i = 1; i < shape.size();) {
    size_t j = i;
    while (j < shape.size() && std::isdigit(static_cast<unsigned char>(shape[j]))) ++j;
    if (j > i) {
      CL_CHECK(j - i <= 15, where << ": dimension " << shape.substr(i, j - i) << " too large");
      info.shape.push_back(std::stoll(shape.substr(i, j - i)));
      CL_CHECK(info.count() < (uint64_t(1) << 50), where << ": shape " << shape << " too large");
    }
    i = j + 1;
  }
  CL_CHECK(info.count() * info.item_size == out_left_,
           where << ": the header's shape does not match the stored data size (" << out_left_ << " bytes)");
  return info;
}

size_t NpzReader::read(uint8_t* out, size_t n) { return raw(out, n); }

std::vector<double> NpzReader::read_doubles(const std::string& name, std::vector<int64_t>* shape) {
  NpyInfo info = open(name);
  CL_CHECK(info.descr == "<f8" || info.descr == "<f4",
           "`" << path_ << "`: array `" << name << "` is " << info.descr << ", expected float32 or float64");
  CL_CHECK(info.count() <= (uint64_t(1) << 27), "`" << path_ << "`: `" << name << "` is too large to read whole ("
                                                   << info.count() << " values)");
  std::vector<uint8_t> bytes(info.count() * info.item_size);
  CL_CHECK(read(bytes.data(), bytes.size()) == bytes.size(), "`" << path_ << "`: `" << name << "` is truncated");
  std::vector<double> out(info.count());
  for (size_t i = 0; i < out.size(); ++i) {
    if (info.item_size == 8) std::memcpy(&out[i], &bytes[i * 8], 8);
    else {
      float v;
      std::memcpy(&v, &bytes[i * 4], 4);
      out[i] = v;
    }
  }
  if (shape) *shape = info.shape;
  return out;
}

}  // namespace cachelab
