#include "quant/quantize.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "framework/error.h"

namespace cachelab {
namespace {

// The row's value at fraction f of its sorted order (nearest rank), [R, 1].
at::Tensor row_rank(const at::Tensor& sorted, double f) {
  const int64_t C = sorted.size(1);
  const int64_t k = std::min<int64_t>(C - 1, std::max<int64_t>(0, int64_t(std::llround(f * double(C - 1)))));
  return sorted.narrow(1, k, 1);
}

}  // namespace

int64_t quant_qmin(int bits, bool symmetric) { return symmetric ? -((int64_t(1) << (bits - 1)) - 1) : 0; }
int64_t quant_qmax(int bits, bool symmetric) {
  return symmetric ? (int64_t(1) << (bits - 1)) - 1 : (int64_t(1) << bits) - 1;
}

RowQuant row_quant(const at::Tensor& lo_in, const at::Tensor& hi_in, int bits, bool symmetric) {
  CL_CHECK(bits >= 2 && bits <= 16, "quantization: bits must be in 2..16, got " << bits);
  RowQuant q;
  q.qmin = quant_qmin(bits, symmetric);
  q.qmax = quant_qmax(bits, symmetric);
  auto lo = lo_in.to(at::kFloat).reshape({-1, 1}).clamp_max(0);
  auto hi = hi_in.to(at::kFloat).reshape({-1, 1}).clamp_min(0);
  if (symmetric) {
    auto m = at::maximum(lo.abs(), hi);
    q.scale = m / double(q.qmax);
    q.zero_point = at::zeros_like(m);
    q.lo = -m;
    q.hi = m;
  } else {
    q.scale = (hi - lo) / double(q.qmax - q.qmin);
    q.lo = lo;
    q.hi = hi;
  }
  auto zero_range = q.scale <= 0;
  q.scale = q.scale.masked_fill(zero_range, 1.0);
  if (!symmetric) q.zero_point = at::round(-lo / q.scale).clamp_(double(q.qmin), double(q.qmax));
  return q;
}

at::Tensor quant_dequant_rows(const at::Tensor& x, const RowQuant& q) {
  auto xf = x.to(at::kFloat);
  return at::round(xf / q.scale)
      .add_(q.zero_point)
      .clamp_(double(q.qmin), double(q.qmax))
      .sub_(q.zero_point)
      .mul_(q.scale);
}

std::pair<at::Tensor, at::Tensor> calibrate_rows(const at::Tensor& x_in, const QuantSpec& s) {
  CL_CHECK(x_in.dim() == 2 && x_in.size(1) > 0, "quantization: calibrate_rows needs a non-empty [R, C] tensor");
  auto x = x_in.to(at::kFloat);
  auto mm = at::aminmax(x, 1, /*keepdim=*/true);
  at::Tensor lo = std::get<0>(mm), hi = std::get<1>(mm);
  if (s.calibrator == "minmax") return {lo, hi};
  if (s.calibrator == "percentile") {
    const double f = s.percentile / 100.0;
    if (s.symmetric) {
      auto m = row_rank(std::get<0>(x.abs().sort(1)), f);
      return {-m, m};
    }
    auto sorted = std::get<0>(x.sort(1));
    return {row_rank(sorted, 1.0 - f), row_rank(sorted, f)};
  }
  CL_CHECK(s.calibrator == "mse", "quantization: unknown calibrator `" << s.calibrator
                                                                       << "` (minmax, percentile, mse)");
  at::Tensor best_lo = lo, best_hi = hi, best_err;
  for (int k = 0; k <= 35; ++k) {
    const double alpha = 1.0 - 0.02 * k;
    auto l = lo * alpha, h = hi * alpha;
    auto err = (quant_dequant_rows(x, row_quant(l, h, s.bits, s.symmetric)) - x).pow_(2).mean(1, true);
    if (k == 0) {
      best_err = err;
      continue;
    }
    auto better = err < best_err;
    best_err = at::where(better, err, best_err);
    best_lo = at::where(better, l, best_lo);
    best_hi = at::where(better, h, best_hi);
  }
  return {best_lo, best_hi};
}

at::Tensor fake_quantize_rows(const at::Tensor& x, const QuantSpec& spec) {
  auto r = calibrate_rows(x, spec);
  return quant_dequant_rows(x, row_quant(r.first, r.second, spec.bits, spec.symmetric));
}

at::Tensor fake_quantize_weight(const at::Tensor& w, const QuantSpec& spec, const std::string& granularity,
                                int64_t group_size) {
  CL_CHECK(w.dim() == 2, "quantization: a weight must be [out, in]");
  const int64_t out = w.size(0), in = w.size(1);
  at::Tensor rows;
  if (granularity == "tensor") {
    rows = w.reshape({1, -1});
  } else if (granularity == "channel") {
    rows = w;
  } else {
    CL_CHECK(granularity == "group", "quantization: unknown weight granularity `" << granularity
                                                                                  << "` (tensor, channel, group)");
    CL_CHECK(group_size > 0 && in % group_size == 0,
             "quantization: group_size " << group_size << " does not divide the weight's " << in << " input features");
    rows = w.reshape({out * (in / group_size), group_size});
  }
  return fake_quantize_rows(rows, spec).reshape({out, in});
}

at::Tensor fake_quantize_per_token(const at::Tensor& x, const QuantSpec& spec) {
  const int64_t K = x.size(-1);
  return fake_quantize_rows(x.reshape({-1, K}), spec).view(x.sizes()).to(x.scalar_type());
}

at::Tensor fake_quantize_range(const at::Tensor& x, float lo, float hi, int bits, bool symmetric) {
  auto q = row_quant(at::full({1}, lo, at::kFloat), at::full({1}, hi, at::kFloat), bits, symmetric);
  return quant_dequant_rows(x.reshape({1, -1}), q).view(x.sizes()).to(x.scalar_type());
}

void OutputError::add(const at::Tensor& y, const at::Tensor& ref_in) {
  const auto ref = ref_in.to(at::kDouble);
  err2 += (y.to(at::kDouble) - ref).pow(2).sum().item<double>();
  ref2 += ref.pow(2).sum().item<double>();
  ++calls;
}

double OutputError::rel() const {
  return ref2 > 0 ? std::sqrt(err2 / ref2) : (err2 > 0 ? std::numeric_limits<double>::infinity() : 0.0);
}

std::vector<int64_t> kmeans_medoids(const at::Tensor& X_in, int k, int iterations) {
  auto X = X_in.to(at::kDouble).contiguous();
  const int64_t n = X.size(0);
  std::vector<int64_t> out;
  if (k >= n) {
    for (int64_t i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  // Farthest-point start: the point nearest the mean, then repeatedly the farthest from all chosen.
  std::vector<int64_t> seeds = {(X - X.mean(0, true)).pow(2).sum(1).argmin().item<int64_t>()};
  auto dmin = (X - X[seeds[0]]).pow(2).sum(1);
  while (int64_t(seeds.size()) < k) {
    seeds.push_back(dmin.argmax().item<int64_t>());
    dmin = at::minimum(dmin, (X - X[seeds.back()]).pow(2).sum(1));
  }
  auto C = X.index_select(0, at::tensor(seeds, at::kLong));
  at::Tensor assign;
  for (int it = 0; it < iterations; ++it) {
    auto d = at::cdist(X, C);
    auto next = d.argmin(1);
    if (assign.defined() && at::equal(next, assign)) break;
    assign = next;
    for (int c = 0; c < k; ++c) {
      auto members = (assign == c).nonzero().view(-1);
      if (members.numel() > 0) C[c] = X.index_select(0, members).mean(0);
    }
  }
  auto d = at::cdist(X, C);
  for (int c = 0; c < k; ++c) {
    auto members = (assign == c).nonzero().view(-1);
    if (members.numel() == 0) continue;
    auto dc = d.index_select(0, members).select(1, c);
    out.push_back(members[dc.argmin().item<int64_t>()].item<int64_t>());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace cachelab
