#include "caches/fastercache.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"
#include "framework/safetensors.h"

namespace cachelab {

void FasterCachePolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  attention_.assign(sites.size(), false);
  int found = 0;
  for (size_t i = 0; i < sites.size(); ++i)
    if (sites[i].kind == SiteKind::Attn && sites[i].stream == 0) attention_[i] = true, ++found;
  CL_CHECK(found > 0 || o_.uncond_interval > 1,
           "fastercache: the backbone has no self-attention site and uncond_interval is 1: nothing to reuse");
  if (o_.attention_interval > 1)
    CL_CHECK(found > 0, "fastercache: the backbone has no self-attention site (stream 0) to extrapolate; set "
                        "attention_interval: 1 to use CFG-Cache alone");
  sites_.assign(sites.size(), SiteState{});
  t_ = 0;
  outer_ = 0;
  evals_ = 0;
  skipping_ = false;
  low_ = high_ = last_uncond_ = at::Tensor();
}

void FasterCachePolicy::begin_step(const StepIndex& step) {
  if (step.outer != outer_) {  // a new chunk of a sequence pipeline starts with nothing cached
    sites_.assign(sites_.size(), SiteState{});
    outer_ = step.outer;
  }
  t_ = step.timestep;
}

Tensors FasterCachePolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  if (s >= attention_.size() || !attention_[s] || o_.attention_interval <= 1) return next(call);
  SiteState& st = sites_[s];
  const int64_t b = call.inputs[0].size(0);
  // Computed at call 0 and every attention_interval-th call; extrapolated at the others when
  // both stored outputs hold the rows this call needs (the first b: the conditional half
  // comes first in a guided batch).
  const bool due = st.calls % o_.attention_interval == 0;
  bool extrapolate = !due && inside(o_.attention_window) && !st.o1.empty() && st.o0.size() == st.o1.size();
  for (size_t i = 0; extrapolate && i < st.o1.size(); ++i)
    extrapolate = st.o0[i].size(0) >= b && st.o1[i].size(0) >= b;
  Tensors out;
  if (extrapolate) {
    call.log->decision = Decision::Predict;
    for (size_t i = 0; i < st.o1.size(); ++i) {
      auto o0 = st.o0[i].narrow(0, 0, b), o1 = st.o1[i].narrow(0, 0, b);
      out.push_back(o1 + o_.attention_weight * (o1 - o0));
    }
  } else {
    out = next(call);
  }
  st.o0 = st.o1.empty() ? out : st.o1;
  st.o1 = out;
  ++st.calls;
  return out;
}

bool FasterCachePolicy::skip_unconditional() {
  const bool have = o_.uncond_estimate == "reuse" ? last_uncond_.defined() : low_.defined();
  skipping_ = evals_ > 0 && have && inside(o_.uncond_window) && evals_ % o_.uncond_interval != 0;
  return skipping_;
}

at::Tensor FasterCachePolicy::low_band(int64_t H, int64_t W) const {
  const int64_t r = int64_t(std::floor(double(std::min(H, W)) * o_.low_freq_radius + 1e-9));
  auto y = at::arange(H, at::kLong).sub(H / 2).unsqueeze(1), x = at::arange(W, at::kLong).sub(W / 2).unsqueeze(0);
  return (y * y + x * x).le(r * r);
}

at::Tensor FasterCachePolicy::estimate_unconditional(const at::Tensor& cond) {
  CL_CHECK(skipping_, "internal: fastercache estimates an unconditional half it was not asked to skip");
  skipping_ = false;
  ++evals_;
  if (o_.uncond_estimate == "reuse") {
    CL_CHECK(last_uncond_.sizes() == cond.sizes(), "fastercache: the batch changed between guided evaluations");
    return last_uncond_;
  }
  CL_CHECK(low_.dim() == cond.dim() && low_.size(0) == cond.size(0),
           "fastercache: the batch changed between guided evaluations");
  // The weights scale the kept difference itself: they accumulate over consecutive skips.
  if (inside(o_.low_freq_window)) low_ = low_ * o_.alpha_low;
  if (inside(o_.high_freq_window)) high_ = high_ * o_.alpha_high;
  const std::vector<int64_t> hw = {-2, -1};
  auto delta = at::fft_ifft2(at::fft_ifftshift(low_ + high_, hw), c10::nullopt, hw);
  return (cond.to(at::kFloat) + at::real(delta).to(cond.device())).to(cond.scalar_type());
}

void FasterCachePolicy::observe(const at::Tensor& cond, const at::Tensor& uncond) {
  skipping_ = false;
  ++evals_;
  if (o_.uncond_estimate == "reuse") {
    last_uncond_ = uncond.clone();
    return;
  }
  CL_CHECK(cond.dim() >= 3, "fastercache: CFG-Cache splits the model's output by 2-D frequency and needs image-like "
                            "outputs [B, C, ..., H, W], got " << shape_str(cond.sizes()));
  const std::vector<int64_t> hw = {-2, -1};
  // The difference's spectrum (the FFT is linear: FFT(u) - FFT(c)), centred, split by band.
  auto d = at::fft_fftshift(at::fft_fft2(uncond.to(at::kFloat) - cond.to(at::kFloat), c10::nullopt, hw), hw);
  auto band = low_band(cond.size(-2), cond.size(-1)).to(d.device());
  low_ = d * band;
  high_ = d * band.logical_not();
}

}  // namespace cachelab
