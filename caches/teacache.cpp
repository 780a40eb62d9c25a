#include "caches/teacache.h"

#include <ATen/ATen.h>

#include "framework/error.h"
#include "metrics/functional.h"

namespace cachelab {

void TeaCachePolicy::begin_run(RunContext& ctx) {
  tap_ = body_ = -1;
  for (size_t i = 0; i < ctx.taps->size(); ++i)
    if ((*ctx.taps)[i].name == "blocks.0.modulated_input") tap_ = int(i);
  for (size_t i = 0; i < ctx.sites->size(); ++i)
    if ((*ctx.sites)[i].kind == SiteKind::Body && (*ctx.sites)[i].stream == 0) body_ = int(i);
  CL_CHECK(tap_ >= 0, "teacache: this backbone exposes no `blocks.0.modulated_input` tap (the DiT does)");
  CL_CHECK(body_ >= 0, "teacache: this backbone has no site of kind body");
  count_ = ctx.steps;
  step_ = 0;
  accumulated_ = 0;
  prev_input_ = residual_ = at::Tensor();
}

void TeaCachePolicy::begin_step(const StepIndex& step) {
  step_ = step.index;
  signal_ = kNoSignal;
}

double TeaCachePolicy::rescale(double d) const {
  double y = 0;
  for (double c : o_.coefficients) y = y * d + c;
  return y;
}

void TeaCachePolicy::tap(int, const at::Tensor& value) {
  if (prev_input_.defined()) signal_ = rescale(rel_l1(value, prev_input_));
  prev_input_ = value;
}

Tensors TeaCachePolicy::at(SiteCall& call, const Next& next) {
  if (call.site != body_) return next(call);
  const bool edge = step_ == 0 || step_ == count_ - 1 || !residual_.defined() || std::isnan(signal_);
  if (!edge) {
    accumulated_ += signal_;
    call.log->signal = accumulated_;
    if (accumulated_ < o_.threshold) {
      call.log->decision = Decision::Reuse;
      return {call.inputs[0] + residual_};
    }
  }
  accumulated_ = 0;
  Tensors out = next(call);
  residual_ = out[0] - call.inputs[0];
  return out;
}

}  // namespace cachelab
