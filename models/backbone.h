// The denoiser interface every backbone implements. No torch/nn in here.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "framework/hooks.h"

namespace cachelab {

class Backbone {
 public:
  virtual ~Backbone() = default;
  // x: [B, C, H, W] float32 noisy sample; t: [B] float32 model timesteps in [0, T);
  // y: [B] int64 class labels (num_classes() = the null label, for guidance).
  // Returns [B, out_channels(), H, W]: epsilon in the first C channels (and the
  // variance interpolation in the next C when the model learns sigma).
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, SiteHooks& hooks) = 0;
  virtual const std::vector<Site>& sites() const = 0;
  virtual std::vector<int64_t> sample_shape() const = 0;  // {C, H, W}
  virtual int num_classes() const = 0;
  virtual bool learns_sigma() const { return false; }
  // Parameters and buffers by their checkpoint names (shared storage, not copies).
  virtual std::vector<std::pair<std::string, at::Tensor>> named_tensors() = 0;
  virtual std::vector<at::Tensor> trainable_parameters() = 0;
  // Loads weights from a safetensors file; errors name the file and what to run to make it.
  virtual void load(const std::string& path) = 0;
  virtual void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata = {}) = 0;
  virtual int64_t num_parameters() = 0;
};

}  // namespace cachelab
