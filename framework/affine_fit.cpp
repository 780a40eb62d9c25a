#include "framework/affine_fit.h"

#include <ATen/ATen.h>

namespace cachelab {

std::pair<at::Tensor, at::Tensor> fit_affine(const at::Tensor& sx, const at::Tensor& sy, const at::Tensor& sxx,
                                             const at::Tensor& sxy, double n) {
  auto mx = sx / n, my = sy / n;
  auto var = sxx / n - mx * mx, cov = sxy / n - mx * my;
  auto flat = var <= 1e-12 * (sxx / n).clamp_min(1e-30);
  auto a = at::where(flat, at::ones_like(var), cov / var.clamp_min(1e-30));
  auto b = my - a * mx;
  return {a, b};
}

void AffineSums::add(const at::Tensor& x_in, const at::Tensor& y_in) {
  const auto x = x_in.to(at::kDouble), y = y_in.to(at::kDouble);
  if (!sx.defined()) sx = sy = sxx = sxy = at::zeros({x.size(1)}, x.options());
  sx = sx + x.sum(0), sy = sy + y.sum(0);
  sxx = sxx + (x * x).sum(0), sxy = sxy + (x * y).sum(0);
  n += double(x.size(0));
}

}  // namespace cachelab
