#include "models/plms.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"
#include "models/samplers.h"

namespace cachelab {

PlmsSampler::PlmsSampler(const PlmsOptions& o) : o_(o) {
  CL_CHECK(o.beta_schedule == "scaled_linear" || o.beta_schedule == "linear",
           "plms: beta_schedule must be scaled_linear or linear, got `" << o.beta_schedule << "`");
  sched_ = o.beta_schedule == "linear" ? NoiseSchedule::linear(o.train_steps, o.beta_start, o.beta_end)
                                       : scaled_linear_schedule(o.train_steps, o.beta_start, o.beta_end);
  auto up = leading_timesteps(o.train_steps, o.steps, 1);
  ts_.assign(up.rbegin(), up.rend());
  evals_.push_back(ts_[0]);
  evals_.push_back(ts_.size() > 1 ? ts_[1] : ts_[0]);  // the warm-up's second evaluation
  for (size_t k = 1; k < ts_.size(); ++k) evals_.push_back(ts_[k]);
}

at::Tensor PlmsSampler::step(int, const at::Tensor&, const at::Tensor&, const at::Tensor&) const {
  CL_FAIL("plms combines the epsilons of earlier steps and evaluates its first step twice: call advance(), not step()");
}

at::Tensor PlmsSampler::ddim(int k, const at::Tensor& x, const at::Tensor& e) const {
  const int n = int(ts_.size());
  // float32 as the reference's buffers: alpha_bar rounded to float, square roots in float.
  const float a = float(sched_.alpha_bar[size_t(ts_[size_t(k)])]);
  const float ap = float(k + 1 < n ? sched_.alpha_bar[size_t(ts_[size_t(k + 1)])] : sched_.alpha_bar[0]);
  auto x0 = (x - std::sqrt(1.0f - a) * e) / std::sqrt(a);
  return std::sqrt(ap) * x0 + std::sqrt(1.0f - ap) * e;
}

at::Tensor PlmsSampler::advance(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor&,
                                std::vector<at::Tensor>& state) const {
  CL_CHECK(i >= 0 && i < int(evals_.size()), "plms: evaluation " << i << " outside [0, " << evals_.size() << ")");
  auto e = model_out.narrow(1, 0, x.size(1));
  if (i == 0) {  // warm-up, first evaluation: remember the start point and its epsilon
    state = {x, e};
    return ddim(0, x, e);
  }
  if (i == 1) {  // warm-up, second evaluation: the trapezoid of both epsilons from the start point
    CL_CHECK(state.size() == 2, "plms: the warm-up's second evaluation without its first (evaluations must run in "
                                "order on one trajectory)");
    auto out = ddim(0, state[0], (state[1] + e) / 2);
    state = {state[1]};  // the epsilon history holds the first evaluation, as the reference's old_eps
    return out;
  }
  const int k = i - 1;
  CL_CHECK(!state.empty() && state.size() <= 3, "plms: step " << k << " without the epsilons of earlier steps");
  const size_t h = state.size();
  auto old = [&](size_t j) { return state[h - j]; };  // e_-j
  at::Tensor ep;
  if (h == 1) {
    ep = (3 * e - old(1)) / 2;
  } else if (h == 2) {
    ep = (23 * e - 16 * old(1) + 5 * old(2)) / 12;
  } else {
    ep = (55 * e - 59 * old(1) + 37 * old(2) - 9 * old(3)) / 24;
  }
  auto out = ddim(k, x, ep);
  state.push_back(e);
  if (state.size() > 3) state.erase(state.begin());
  return out;
}

}  // namespace cachelab
