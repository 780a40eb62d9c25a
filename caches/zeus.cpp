#include "caches/zeus.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "framework/error.h"

namespace cachelab {

void ZeusPolicy::begin_run(RunContext& ctx) {
  site_ = find_site(*ctx.sites, SiteKind::Model);
  CL_CHECK(site_ >= 0, "zeus: this backbone has no site of kind model (the whole denoiser)");
  steps_ = ctx.inner_steps > 0 ? ctx.inner_steps : ctx.steps;
  y_k_ = y_prev_ = last_out_ = at::Tensor();
  last_was_extrapolation_ = false;
}

void ZeusPolicy::begin_step(const StepIndex& step) {
  step_ = step.inner_count > 0 ? step.inner : step.index;
  if (step.inner_count > 0 && step.inner == 0) y_k_ = y_prev_ = last_out_ = at::Tensor();
}

bool ZeusPolicy::scheduled_skip(int s, int steps) const {
  const int a = int(std::ceil(o_.start * steps - 1e-9)), b = int(std::ceil(o_.end * steps - 1e-9));
  if (s < a || s >= b) return false;
  const int r = (s - a) % o_.denominator;
  return std::find(o_.modular.begin(), o_.modular.end(), r) != o_.modular.end();
}

Tensors ZeusPolicy::at(SiteCall& call, const Next& next) {
  if (call.site != site_) return next(call);
  const bool ready = y_k_.defined() && y_prev_.defined() && last_out_.defined();
  if (ready && scheduled_skip(step_, steps_)) {
    const bool extrapolate =
        o_.mode == "interp_all" || (o_.mode == "reuse_interp" && !last_was_extrapolation_);
    if (extrapolate) {
      const double w = (double(step_) - s_k_) / (s_k_ - s_prev_);
      last_out_ = y_k_ + (y_k_ - y_prev_) * w;
      call.log->decision = Decision::Predict;
      call.log->signal = w;
    } else {
      call.log->decision = Decision::Reuse;
      call.log->signal = 0.0;
    }
    last_was_extrapolation_ = extrapolate;
    return {last_out_};
  }
  Tensors out = next(call);
  y_prev_ = y_k_, s_prev_ = s_k_;
  y_k_ = out[0], s_k_ = double(step_);
  last_out_ = out[0];
  last_was_extrapolation_ = false;
  return out;
}

}  // namespace cachelab
