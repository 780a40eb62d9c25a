#include "framework/safetensors.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "framework/error.h"
#include "framework/lock.h"

namespace cachelab {
namespace {

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
// The safetensors dtype strings cachelab reads and writes.
constexpr DtypeName kDtypes[] = {{"F32", at::kFloat}, {"F64", at::kDouble}, {"F16", at::kHalf},
                                 {"BF16", at::kBFloat16}, {"I64", at::kLong}, {"I32", at::kInt},
                                 {"I8", at::kChar}, {"U8", at::kByte}};

at::ScalarType dtype_of(const std::string& name, const std::string& path) {
  for (auto& d : kDtypes)
    if (name == d.name) return d.type;
  CL_FAIL("safetensors file `" << path << "` uses dtype `" << name << "`, which cachelab does not read");
}
const char* name_of(at::ScalarType t) {
  for (auto& d : kDtypes)
    if (t == d.type) return d.name;
  CL_FAIL("cannot write dtype " << at::toString(t) << " to safetensors");
}

}  // namespace

std::string shape_str(at::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  CL_CHECK(in.good(), "safetensors file `" << path << "` not found");
  const int64_t size = in.tellg();
  in.seekg(0);
  const std::string corrupt = "weights file `" + path + "` is truncated or not a safetensors file";
  CL_CHECK(size >= 8, corrupt << " (" << size << " bytes)");
  uint64_t header_len = 0;
  unsigned char b[8];
  in.read(reinterpret_cast<char*>(b), 8);
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | b[i];
  CL_CHECK(header_len <= uint64_t(size - 8) && header_len < (1u << 26),
           corrupt << " (header length " << header_len << " but file has " << size << " bytes)");
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    CL_FAIL(corrupt << " (header is not valid JSON: " << e.what() << ")");
  }
  CL_CHECK(j.is_object(), corrupt << " (header is not a JSON object)");
  const int64_t data_start = 8 + int64_t(header_len);
  const int64_t data_size = size - data_start;
  std::vector<char> data(static_cast<size_t>(data_size));
  in.read(data.data(), data_size);
  CL_CHECK(in.gcount() == data_size, corrupt);

  SafetensorsFile out;
  // JSON objects are unordered; keep the file's data order (by offset).
  std::vector<std::tuple<int64_t, std::string, at::Tensor>> ordered;
  // Every field is checked for its JSON type and range: a malformed header is a clear error,
  // never a JSON library exception or an overflowing size (tests/fuzz/corpus/safetensors).
  auto integers = [&](const nlohmann::json& v, const std::string& name, const char* what) {
    CL_CHECK(v.is_array(), corrupt << " (tensor `" << name << "`: " << what << " is not a list)");
    std::vector<int64_t> out;
    for (auto& x : v) {
      CL_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0,
               corrupt << " (tensor `" << name << "`: " << what << " holds " << x.dump() << ", not a count)");
      out.push_back(x.get<int64_t>());
    }
    return out;
  };
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      CL_CHECK(it->is_object(), corrupt << " (__metadata__ is not a JSON object)");
      for (auto m = it->begin(); m != it->end(); ++m)
        out.metadata[m.key()] = m->is_string() ? m->get<std::string>() : m->dump();
      continue;
    }
    const auto& e = it.value();
    CL_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
             corrupt << " (entry `" << it.key() << "` lacks dtype, shape or data_offsets)");
    CL_CHECK(e["dtype"].is_string(), corrupt << " (tensor `" << it.key() << "`: dtype is not a string)");
    auto type = dtype_of(e["dtype"].get<std::string>(), path);
    std::vector<int64_t> shape = integers(e["shape"], it.key(), "shape");
    auto off = integers(e["data_offsets"], it.key(), "data_offsets");
    CL_CHECK(off.size() == 2 && off[0] <= off[1] && off[1] <= data_size,
             corrupt << " (tensor `" << it.key() << "` lies outside the file's data)");
    int64_t numel = 1;
    for (auto d : shape) {
      CL_CHECK(d == 0 || numel <= data_size / d, corrupt << " (tensor `" << it.key() << "` has shape " << shape_str(shape)
                                                         << ", more elements than the file holds)");
      numel *= d;
    }
    CL_CHECK(numel * int64_t(at::elementSize(type)) == off[1] - off[0],
             corrupt << " (tensor `" << it.key() << "` has " << off[1] - off[0] << " bytes for shape "
                     << shape_str(shape) << ")");
    auto t = at::empty(shape, at::TensorOptions().dtype(type));
    if (numel) std::memcpy(t.data_ptr(), data.data() + off[0], size_t(off[1] - off[0]));
    ordered.emplace_back(off[0], it.key(), t);
  }
  std::sort(ordered.begin(), ordered.end(), [](auto& a, auto& b) { return std::get<0>(a) < std::get<0>(b); });
  for (auto& [o, name, t] : ordered) out.tensors.emplace_back(name, t);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> blobs;
  int64_t offset = 0;
  for (auto& [name, t] : tensors) {
    auto c = t.detach().to(at::kCPU).contiguous();
    int64_t bytes = c.numel() * int64_t(c.element_size());
    header[name] = {{"dtype", name_of(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    blobs.push_back(c);
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h += ' ';  // align the data to 8 bytes, as the format recommends
  // A unique temporary (tasks on other nodes may write the same file); see framework/lock.h.
  const std::string tmp = temp_path(path);
  {
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    std::ofstream out(tmp, std::ios::binary);
    CL_CHECK(out.good(), "cannot write `" << tmp << "` (is the folder writable?)");
    uint64_t n = h.size();
    for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xff));
    out.write(h.data(), std::streamsize(h.size()));
    for (auto& c : blobs) out.write(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
    errno = 0;
    out.close();  // buffered bytes reach the disk here: check after it
    if (!out) {
      const int err = errno;
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      fail_write(path, "writing tensors", err);
    }
  }
  std::filesystem::rename(tmp, path);
}

void load_into(const std::vector<std::pair<std::string, at::Tensor>>& model_tensors, const std::string& path,
               const std::string& make_hint) {
  CL_CHECK(std::filesystem::exists(path), "weights file `" << path << "` not found (looked at "
                                                            << std::filesystem::absolute(path).string()
                                                            << "); make it with `" << make_hint << "`");
  SafetensorsFile f = read_safetensors(path);
  std::map<std::string, at::Tensor> by_name(f.tensors.begin(), f.tensors.end());
  std::set<std::string> used;
  for (auto& [name, dst] : model_tensors) {
    auto it = by_name.find(name);
    CL_CHECK(it != by_name.end(), "weights file `" << path << "` has no tensor `" << name
                                                   << "`: it was made for a different model configuration; "
                                                      "check the backbone keys or retrain with `"
                                                   << make_hint << "`");
    CL_CHECK(it->second.sizes() == dst.sizes(),
             "weights file `" << path << "`: tensor `" << name << "` has shape " << shape_str(it->second.sizes())
                              << " but the configured model expects " << shape_str(dst.sizes())
                              << "; the backbone keys (hidden_size, depth, patch_size, ...) do not match the file");
    c10::NoGradGuard guard;  // c10:: in every LibTorch (2.x dropped the at:: alias)
    dst.copy_(it->second.to(dst.scalar_type()));
    used.insert(name);
  }
  for (auto& [name, t] : f.tensors)
    CL_CHECK(used.count(name), "weights file `" << path << "` has tensor `" << name
                                                << "` that the configured model lacks: configuration mismatch");
}

std::vector<at::Tensor> tensors_of(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<at::Tensor> out;
  for (auto& nt : named) out.push_back(nt.second);
  return out;
}

int64_t numel_of(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  int64_t n = 0;
  for (auto& nt : named) n += nt.second.numel();
  return n;
}

void move_tensors(std::vector<std::pair<std::string, at::Tensor>>& named, at::Device device, at::ScalarType dtype) {
  c10::NoGradGuard guard;  // c10:: in every LibTorch
  for (auto& nt : named) nt.second.set_data(nt.second.to(device, dtype));
}

}  // namespace cachelab
