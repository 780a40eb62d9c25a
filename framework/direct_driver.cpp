#include "framework/direct_driver.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

namespace cachelab {

DirectDriver::DirectDriver(const Backbone& backbone, uint64_t seed)
    : hooks_(backbone.linears()), gen_(at::detail::createCPUGenerator(seed)) {}

bool DirectDriver::end_step(const at::Tensor& x_after) {
  after.push_back(x_after.clone());
  return true;
}

at::Tensor DirectDriver::randn(at::IntArrayRef shape) { return at::randn(shape, gen_); }

at::TensorOptions DirectDriver::options() const { return at::TensorOptions().dtype(at::kFloat); }

}  // namespace cachelab
