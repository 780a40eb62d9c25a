#include "caches/easycache.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"

namespace cachelab {

namespace {
double mean_abs(const at::Tensor& t) { return t.abs().mean().item<double>(); }
}  // namespace

void EasyCachePolicy::begin_run(RunContext& ctx) {
  site_ = find_site(*ctx.sites, o_.site == "model" ? SiteKind::Model : SiteKind::Body);
  CL_CHECK(site_ >= 0, "easycache: this backbone has no main-stream site of kind " << o_.site);
  count_ = ctx.steps;
  step_ = 0;
  k_ = kNoSignal;
  accumulated_ = 0;
  prev_input_ = last_input_ = last_output_ = at::Tensor();
}

Tensors EasyCachePolicy::at(SiteCall& call, const Next& next) {
  if (call.site != site_) return next(call);
  const at::Tensor x = call.inputs[0];
  const at::Tensor before = prev_input_;
  prev_input_ = x;
  const bool edge = step_ < o_.warmup_steps || step_ == count_ - 1 || std::isnan(k_) || !before.defined();
  if (!edge) {
    const double scale = mean_abs(last_output_);
    accumulated_ += scale > 0 ? k_ * mean_abs(x - before) / scale : INFINITY;
    call.log->signal = accumulated_;
    if (accumulated_ < o_.threshold) {
      call.log->decision = Decision::Reuse;
      return {x + (last_output_ - last_input_)};
    }
  }
  accumulated_ = 0;
  Tensors out = next(call);
  CL_CHECK(out[0].sizes() == x.sizes(),
           "easycache: site `" << o_.site << "` maps " << x.sizes() << " to " << out[0].sizes()
                               << "; its transformation (output - input) needs equal shapes"
                               << (o_.site == "model" ? " (a model that also predicts the variance: use site: body)" : ""));
  if (last_output_.defined()) {
    const double dx = mean_abs(x - last_input_);
    k_ = dx > 0 ? mean_abs(out[0] - last_output_) / dx : kNoSignal;
  }
  last_input_ = x;
  last_output_ = out[0];
  return out;
}

void UCachePolicy::begin_run(RunContext& ctx) {
  site_ = find_site(*ctx.sites, SiteKind::Model);
  CL_CHECK(site_ >= 0, "ucache: this backbone has no model site");
  first_ = int(o_.start * ctx.steps), last_ = int(o_.end * ctx.steps);
  step_ = 0;
  k_ = kNoSignal;
  accumulated_ = reference_norm_ = 0;
  last_input_ = last_output_ = at::Tensor();
}

Tensors UCachePolicy::at(SiteCall& call, const Next& next) {
  if (call.site != site_ || step_ < first_ || step_ >= last_) return next(call);
  const at::Tensor x = call.inputs[0];
  double dx = kNoSignal;
  if (last_input_.defined()) {
    dx = mean_abs(x - last_input_);
    const double norm = mean_abs(last_output_);
    if (!std::isnan(k_) && dx > 0 && norm > 0) {
      accumulated_ = accumulated_ * o_.decay + k_ * dx / norm;
      call.log->signal = accumulated_;
      const double limit = o_.threshold * (o_.adaptive ? 0.5 : 1.0) * (o_.relative ? reference_norm_ : 1.0);
      if (accumulated_ < limit) {
        call.log->decision = Decision::Reuse;
        return {x + (last_output_ - last_input_)};
      }
      if (o_.reset) accumulated_ = 0;
    }
  }
  Tensors out = next(call);
  CL_CHECK(out[0].sizes() == x.sizes(), "ucache: the model maps " << x.sizes() << " to " << out[0].sizes()
                                                                  << "; its transformation (output - input) needs equal shapes");
  if (last_output_.defined() && dx > 0) {
    const double dy = mean_abs(out[0] - last_output_);
    if (dy > 0) k_ = dy / dx;
  }
  last_input_ = x;
  last_output_ = out[0];
  if (reference_norm_ == 0) reference_norm_ = mean_abs(out[0]);
  return out;
}

}  // namespace cachelab
