#include "quant/sixbit.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "framework/error.h"
#include "framework/registries.h"

namespace cachelab {

SixBitPolicy::SixBitPolicy(const SixBitOptions& o, const BuildContext& ctx) : o_(o) {
  if (!o.inner.empty()) inner_ = caches().build(o.inner.node, nullptr, ctx);
}
SixBitPolicy::~SixBitPolicy() = default;

std::vector<bool> SixBitPolicy::allocate(const std::vector<double>& diff, int low_count) {
  const int n = int(diff.size());
  std::vector<int> order(size_t(n), 0);
  std::iota(order.begin(), order.end(), 0);
  // Most stable first; unknown differences after known ones, deepest block first.
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    const bool ka = std::isfinite(diff[size_t(a)]), kb = std::isfinite(diff[size_t(b)]);
    if (ka != kb) return ka;
    if (!ka) return a > b;
    return diff[size_t(a)] < diff[size_t(b)];
  });
  std::vector<bool> low(size_t(n), false);
  for (int i = 0; i < low_count && i < n; ++i) low[size_t(order[size_t(i)])] = true;
  return low;
}

void SixBitPolicy::begin_run(RunContext& ctx) {
  if (inner_) inner_->begin_run(ctx);
  ctx_ = &ctx;
  depth_ = main_stream_blocks(*ctx.sites, block_of_);
  CL_CHECK(depth_ > 0, "sixbit: this backbone has no block sites to choose a precision for");
  const double k = depth_ * (o_.high_bits - o_.budget_bits) / double(o_.high_bits - o_.low_bits);
  const double step = double(o_.high_bits - o_.low_bits) / depth_;
  CL_CHECK(std::fabs(k - std::round(k)) < 1e-9,
           "sixbit: budget_bits " << o_.budget_bits << " needs " << k << " of the " << depth_
                                  << " blocks at low_bits per step; use a budget that makes it whole, e.g. "
                                  << o_.high_bits - std::ceil(k) * step << " or " << o_.high_bits - std::floor(k) * step);
  low_count_ = int(std::lround(k));
  diff_.assign(size_t(depth_), std::nan(""));
  ctx.block_bits.assign(size_t(depth_), o_.high_bits);
  diff_extra_ = ctx.declare_site_extra("inout_diff", "ratio", "||out - in|| / ||in|| of the block (sixbit's predictor)");
  bits_extra_ = ctx.declare_site_extra("block_bits", "bits", "the bit width sixbit gave the block's linears");
}

void SixBitPolicy::begin_step(const StepIndex& step) {
  if (inner_) inner_->begin_step(step);
  if (step.inner == 0) diff_.assign(size_t(depth_), std::nan(""));  // a new chunk starts unknown
  const auto low = allocate(o_.predictor == "fixed" ? std::vector<double>(size_t(depth_), std::nan("")) : diff_,
                            low_count_);
  for (int b = 0; b < depth_; ++b) ctx_->block_bits[size_t(b)] = low[size_t(b)] ? o_.low_bits : o_.high_bits;
}

Tensors SixBitPolicy::at(SiteCall& call, const Next& next) {
  Tensors out = inner_ ? inner_->at(call, next) : next(call);
  const int b = call.site >= 0 && size_t(call.site) < block_of_.size() ? block_of_[size_t(call.site)] : -1;
  if (b < 0 || out.empty() || call.inputs.empty()) return out;
  const at::Tensor& in = call.inputs[0];
  double d = std::nan("");
  if (out[0].sizes() == in.sizes() && !call.rows.defined()) {
    const double n = in.to(at::kDouble).norm().item<double>();
    if (n > 0) d = (out[0].to(at::kDouble) - in.to(at::kDouble)).norm().item<double>() / n;
  }
  diff_[size_t(b)] = d;
  ctx_->set_site_extra(diff_extra_, call.site, d);
  ctx_->set_site_extra(bits_extra_, call.site, ctx_->block_bits[size_t(b)]);
  return out;
}

}  // namespace cachelab
