#include "caches/ras.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "framework/error.h"

namespace cachelab {

void RasPolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  selected_.assign(sites.size(), false);
  cache_.assign(sites.size(), at::Tensor());
  model_site_ = -1;
  int matched = 0;
  for (size_t i = 0; i < sites.size(); ++i) {
    if (sites[i].kind == SiteKind::Model && model_site_ < 0) model_site_ = int(i);
    for (auto& l : o_.layers)
      if (sites[i].kind == site_kind_from_name(l)) {
        CL_CHECK(sites[i].rows, "ras: site `" << sites[i].name << "` does not accept a token subset");
        selected_[i] = true, ++matched;
      }
  }
  CL_CHECK(model_site_ >= 0, "ras: the backbone has no site of kind model (its noise estimate is what RAS caches)");
  CL_CHECK(matched > 0, "ras: no site of this backbone has a kind in `layers`");
  fraction_extra_ = ctx.declare_site_extra("computed_token_fraction", "ratio",
                                           "fraction of the site's tokens computed at this step (toca, ras)");
  steps_ = ctx.inner_steps > 0 ? ctx.inner_steps : ctx.steps;
  noise_ = active_ = dropped_ = at::Tensor();
  tokens_ = 0;
  step_ = outer_ = 0;
  ras_now_ = false;
}

bool RasPolicy::ras_step(int step) const {
  const int end = o_.end_step < 0 ? steps_ - 1 : o_.end_step;
  return step >= o_.start_step && step <= end &&
         std::find(o_.reset_steps.begin(), o_.reset_steps.end(), step) == o_.reset_steps.end();
}

void RasPolicy::begin_step(const StepIndex& step) {
  if (step.outer != outer_) {  // a new trajectory (a chunk of a sequence pipeline)
    cache_.assign(cache_.size(), at::Tensor());
    noise_ = active_ = dropped_ = at::Tensor();
    outer_ = step.outer;
  }
  step_ = step.inner;
  ras_now_ = ras_step(step_) && active_.defined() && noise_.defined();
}

at::Tensor RasPolicy::token_scores(const at::Tensor& out, int64_t tokens, const std::string& metric) {
  CL_CHECK(out.dim() == 4, "ras: the model output must be an image [B, C, H, W]; got " << out.dim() << " dims");
  const int64_t B = out.size(0), C = out.size(1), H = out.size(2), W = out.size(3);
  const auto g = int64_t(std::llround(std::sqrt(double(tokens))));
  CL_CHECK(g * g == tokens && H % g == 0 && W % g == 0 && H / g == W / g,
           "ras: " << tokens << " tokens are not the square patches of a " << H << "x" << W << " output");
  CL_CHECK(metric != "std" || C >= 2, "ras: metric std is the spread over channels and needs >= 2; this model "
                                      "outputs " << C << " (use metric: l2norm)");
  const int64_t p = H / g;
  auto o = out.to(at::kFloat);
  auto per_pixel = metric == "std" ? o.std(1) : o.norm(2, {1});   // [B, H, W]
  return per_pixel.reshape({B, g, p, g, p}).mean({2, 4}).mean(0).reshape({tokens});  // row-major patches
}

std::pair<at::Tensor, at::Tensor> RasPolicy::select(const at::Tensor& scores, int64_t skip, double high_ratio) {
  const int64_t N = scores.size(0);
  skip = std::clamp<int64_t>(skip, 0, N);
  const auto order = std::get<1>(scores.sort());  // ascending
  const auto high = int64_t(std::llround(double(skip) * high_ratio)), low = skip - high;
  auto left = at::cat({order.narrow(0, 0, low), order.narrow(0, N - high, high)});
  auto active = order.narrow(0, low, N - skip);
  return {std::get<0>(active.sort()), std::get<0>(left.sort())};
}

Tensors RasPolicy::at_model(SiteCall& call, const Next& next) {
  Tensors out = next(call);
  at::Tensor o = out[0];
  if (ras_now_ && active_.defined()) {
    CL_CHECK(noise_.sizes() == o.sizes(), "ras: the model output changed shape between steps");
    // Pixels of the left-out tokens keep the previous noise estimate.
    const int64_t g = int64_t(std::llround(std::sqrt(double(tokens_)))), p = o.size(2) / g;
    auto on = at::zeros({tokens_}, o.options().dtype(at::kBool)).index_fill(0, active_, true);
    auto mask = on.reshape({g, 1, g, 1}).expand({g, p, g, p}).reshape({1, 1, g * p, g * p});
    o = at::where(mask, o, noise_);
  }
  noise_ = o;
  if (ras_step(step_ + 1) && tokens_ > 0) {
    auto scores = token_scores(o, tokens_, o_.metric);
    if (!dropped_.defined()) dropped_ = at::zeros({tokens_}, scores.options());
    scores = scores * (dropped_ * o_.starvation_scale).exp();
    const auto skip = int64_t(std::floor((1.0 - o_.sample_ratio) * double(tokens_) + 1e-9));
    auto [active, left] = select(scores, skip, o_.high_ratio);
    active_ = active;
    dropped_ = dropped_.index_add(0, left, at::ones({left.size(0)}, dropped_.options()));
    call.log->signal = scores.mean().item<double>();
  } else {
    active_ = at::Tensor();
  }
  return {o};
}

Tensors RasPolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  if (call.site == model_site_) return at_model(call, next);
  if (!selected_[s]) return next(call);
  const at::Tensor& x = call.inputs[0];
  tokens_ = x.size(1);
  at::Tensor& cache = cache_[s];
  if (!ras_now_ || !active_.defined() || !cache.defined() || cache.sizes() != x.sizes() || active_.size(0) >= tokens_) {
    Tensors out = next(call);
    cache = out[0];
    call.log->set_extra(fraction_extra_, 1.0);
    return out;
  }
  call.rows = active_;
  Tensors part = next(call);
  call.rows = at::Tensor();
  cache = cache.index_copy(1, active_, part[0]);  // a new tensor: outputs are never written in place
  call.log->set_extra(fraction_extra_, double(active_.size(0)) / double(tokens_));
  return {cache};
}

}  // namespace cachelab
