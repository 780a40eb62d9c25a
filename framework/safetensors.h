// Reading and writing safetensors files (the format public DiT conversions use):
// 8-byte little-endian header length, a JSON header {name: {dtype, shape,
// data_offsets}, "__metadata__": {...}}, then the raw little-endian data.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cachelab {

struct SafetensorsFile {
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // in file order
  std::map<std::string, std::string> metadata;
};

// "[2, 3, 4]", for error messages.
std::string shape_str(at::IntArrayRef shape);

// Throws cachelab::Error naming the file on a missing, truncated or corrupt file.
SafetensorsFile read_safetensors(const std::string& path);
// Writes atomically (to path + ".tmp", then renamed). Supports F32, F64, F16, I64, I32, U8.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Copies `file` into the named tensors of a model: every model tensor must be present
// with the same shape; extra file tensors are an error too. `make_hint` says how to
// produce the file (e.g. "cachelab train configs/train/dit-mnist.yaml").
void load_into(const std::vector<std::pair<std::string, at::Tensor>>& model_tensors, const std::string& path,
               const std::string& make_hint);

// For models that hold their weights as one named tensor list (llada, sd_unet): the
// Backbone methods trainable_parameters, num_parameters and to over that list.
std::vector<at::Tensor> tensors_of(const std::vector<std::pair<std::string, at::Tensor>>& named);
int64_t numel_of(const std::vector<std::pair<std::string, at::Tensor>>& named);
void move_tensors(std::vector<std::pair<std::string, at::Tensor>>& named, at::Device device, at::ScalarType dtype);

}  // namespace cachelab
