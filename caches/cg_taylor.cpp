#include "caches/cg_taylor.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "caches/taylorseer.h"
#include "framework/error.h"
#include "metrics/functional.h"

namespace cachelab {

void CgTaylorPolicy::History::add(double s, const at::Tensor& v, int order, const std::string& form) {
  steps.push_back(s);
  values.push_back(v);
  if (values.size() > size_t(order) + 1) steps.erase(steps.begin()), values.erase(values.begin());
  coef = TaylorSeerPolicy::coefficients(steps, values, form);
}

void CgTaylorPolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  depth_ = main_stream_blocks(sites, block_of_);
  CL_CHECK(depth_ >= 2, "cg_taylor: needs a backbone with at least 2 main-stream blocks (kind block), found " << depth_);
  first_ = History(), last_ = History();
  consecutive_ = 0;
}

void CgTaylorPolicy::begin_step(const StepIndex& step) {
  step_ = step.index;
  forecast_ = false;
}

Tensors CgTaylorPolicy::at(SiteCall& call, const Next& next) {
  const int b = block_of_[size_t(call.site)];
  if (b < 0) return next(call);
  if (b == 0) {
    Tensors out = next(call);
    double err = kNoSignal;
    if (!first_.values.empty() && !last_.values.empty())
      err = rel_l1(TaylorSeerPolicy::evaluate(first_.coef, first_.steps, double(step_), o_.form), out[0]);
    call.log->signal = err;
    const bool capped = o_.max_consecutive >= 0 && consecutive_ >= o_.max_consecutive;
    forecast_ = step_ >= o_.warmup_steps && std::isfinite(err) && err < o_.threshold && !capped;
    if (forecast_) {
      ++consecutive_;
    } else {
      consecutive_ = 0;
      first_.add(double(step_), out[0], o_.order, o_.form);
    }
    return out;
  }
  if (forecast_) {
    if (b < depth_ - 1) {
      call.log->decision = Decision::Reuse;  // skipped: the stream passes through to the last block
      return {call.inputs[0]};
    }
    call.log->decision = Decision::Predict;
    return {TaylorSeerPolicy::evaluate(last_.coef, last_.steps, double(step_), o_.form)};
  }
  Tensors out = next(call);
  if (b == depth_ - 1) last_.add(double(step_), out[0], o_.order, o_.form);
  return out;
}

}  // namespace cachelab
