#include "caches/foca.h"

#include <ATen/ATen.h>

#include "framework/error.h"

namespace cachelab {

void FocaPolicy::History::add(double s, const at::Tensor& v) {
  steps.push_back(s);
  values.push_back(v);
  if (values.size() > 3) steps.erase(steps.begin()), values.erase(values.begin());
  prev_slope = slope;
  prev_step = steps.size() >= 2 ? steps[steps.size() - 2] : 0.0;
  const size_t n = values.size();
  if (n == 1) {
    slope = at::Tensor();
  } else if (n == 2) {
    slope = (values[1] - values[0]) / (steps[1] - steps[0]);
  } else {
    // Variable-step BDF2: derivative at s_k of the quadratic through the last three points.
    const double h1 = steps[2] - steps[1], h2 = steps[1] - steps[0];
    slope = values[2] * ((2 * h1 + h2) / (h1 * (h1 + h2))) - values[1] * ((h1 + h2) / (h1 * h2)) +
            values[0] * (h1 / (h2 * (h1 + h2)));
  }
}

at::Tensor FocaPolicy::forecast(const History& h, double s, const std::string& form) {
  CL_CHECK(!h.values.empty(), "foca: a forecast needs at least one computed point");
  if (!h.slope.defined()) return h.values.back();
  const double delta = s - h.steps.back();
  if (form == "euler" || !h.prev_slope.defined()) return h.values.back() + h.slope * delta;
  // Heun: the trapezoid of the slope now and the slope extrapolated to s.
  const double h1 = h.steps.back() - h.prev_step;
  auto slope_s = h.slope + (h.slope - h.prev_slope) * (delta / h1);
  return h.values.back() + (h.slope + slope_s) * (delta / 2);
}

void FocaPolicy::begin_step(const StepIndex& step) {
  if (step.outer != outer_) history_.assign(history_.size(), History()), outer_ = step.outer;
  step_ = step.inner;
}

void FocaPolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  selected_.assign(sites.size(), false);
  history_.assign(sites.size(), History());
  int matched = 0;
  for (size_t i = 0; i < sites.size(); ++i)
    for (auto& l : o_.layers)
      if (sites[i].kind == site_kind_from_name(l)) selected_[i] = true, ++matched;
  CL_CHECK(matched > 0, "foca: no site of this backbone has a kind in `layers`");
  step_ = outer_ = 0;
}

Tensors FocaPolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  History& h = history_[s];
  const bool compute = !selected_[s] || h.values.empty() || step_ < o_.warmup_steps || (step_ - o_.warmup_steps) % o_.interval == 0;
  if (!compute) {
    call.log->decision = h.slope.defined() ? Decision::Predict : Decision::Reuse;
    return {forecast(h, double(step_), o_.form)};
  }
  Tensors out = next(call);
  if (selected_[s]) h.add(double(step_), out[0]);
  return out;
}

}  // namespace cachelab
