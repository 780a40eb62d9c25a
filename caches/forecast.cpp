#include "caches/forecast.h"

#include <ATen/ATen.h>

#include "caches/taylorseer.h"
#include "framework/error.h"
#include "framework/registries.h"

namespace cachelab {

ForecastLayer::ForecastLayer(const ForecastOptions& o, const BuildContext& ctx) : o_(o) {
  CL_CHECK(!o.inner.empty(), "forecast: `inner` must name the policy that decides (e.g. {type: dbcache})");
  form_ = !o.form.empty() ? o.form : o.forecaster == "foca" ? "heun" : "newton";
  inner_ = caches().build(o.inner.node, nullptr, ctx);
}

void ForecastLayer::begin_run(RunContext& ctx) {
  inner_->begin_run(ctx);
  const auto& sites = *ctx.sites;
  residual_.assign(sites.size(), false);
  for (size_t i = 0; i < sites.size(); ++i)
    residual_[i] = sites[i].kind == SiteKind::Block || sites[i].kind == SiteKind::Body || sites[i].kind == SiteKind::Model;
  history_.assign(sites.size(), History());
  outer_ = -1;
}

void ForecastLayer::begin_step(const StepIndex& step) {
  inner_->begin_step(step);
  if (step.outer != outer_) history_.assign(history_.size(), History());  // a new trajectory
  outer_ = step.outer;
  step_ = step.inner;
}

void ForecastLayer::record(History& h, double step, const at::Tensor& value) const {
  if (o_.forecaster == "foca") {
    h.foca.add(step, value);
    return;
  }
  h.steps.push_back(step);
  h.values.push_back(value);
  if (h.values.size() > size_t(o_.order) + 1) h.steps.erase(h.steps.begin()), h.values.erase(h.values.begin());
  h.coef = TaylorSeerPolicy::coefficients(h.steps, h.values, form_);
}

at::Tensor ForecastLayer::forecast(const History& h, double step) const {
  return o_.forecaster == "foca" ? FocaPolicy::forecast(h.foca, step, form_)
                                 : TaylorSeerPolicy::evaluate(h.coef, h.steps, step, form_);
}

Tensors ForecastLayer::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  bool computed = false, partial = false;
  Tensors out = inner_->at(call, [&](const SiteCall& c) {
    (c.rows.defined() ? partial : computed) = true;
    return next(c);
  });
  History& h = history_[s];
  const at::Tensor& input = call.inputs[0];
  const bool residual = residual_[s] && out[0].sizes() == input.sizes();  // (a model site may change the shape)
  if (computed && !partial) {
    record(h, double(step_), residual ? out[0] - input : out[0]);
    return out;
  }
  if (computed || partial || h.empty()) return out;  // the inner's own answer
  call.log->decision = Decision::Predict;
  const at::Tensor f = forecast(h, double(step_));
  Tensors res = out;
  res[0] = residual ? input + f : f;
  return res;
}

}  // namespace cachelab
