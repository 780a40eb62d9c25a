// Per-channel least-squares affine fits from running sums, shared by the correctors that
// fit y ~ a x + b (DEC's caches/dec.h, ptq's quantization-error correction).
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>

namespace cachelab {

// Least-squares y ~ a x + b per channel (last dim) from running sums; a = 1 where x does
// not vary. Inputs: sums over rows of x, y, x^2, x*y ([D] float64) and the row count.
std::pair<at::Tensor, at::Tensor> fit_affine(const at::Tensor& sx, const at::Tensor& sy, const at::Tensor& sxx,
                                             const at::Tensor& sxy, double n);

// Running least-squares sums for fit_affine: add(x, y) with rows [R, C] of stand-ins x and
// truths y (any dtype; summed in float64), then fit() gives (a, b) per channel, [C] each.
struct AffineSums {
  at::Tensor sx, sy, sxx, sxy;
  double n = 0;
  void add(const at::Tensor& x, const at::Tensor& y);
  std::pair<at::Tensor, at::Tensor> fit() const { return fit_affine(sx, sy, sxx, sxy, n); }
};

}  // namespace cachelab
