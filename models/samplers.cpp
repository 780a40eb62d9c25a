#include "models/samplers.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"

namespace cachelab {

NoiseSchedule NoiseSchedule::linear(int T, double beta_start, double beta_end) {
  CL_CHECK(T >= 2, "schedule: train_steps must be >= 2, got " << T);
  NoiseSchedule s;
  s.num_train_steps = T;
  double prod = 1.0;
  for (int t = 0; t < T; ++t) {
    double beta = beta_start + (beta_end - beta_start) * t / (T - 1);
    s.betas.push_back(beta);
    prod *= 1.0 - beta;
    s.alpha_bar.push_back(prod);
  }
  return s;
}

at::Tensor NoiseSchedule::q_sample(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& noise) const {
  auto abar = at::tensor(alpha_bar, at::kDouble).index_select(0, t).to(x0.scalar_type());
  std::vector<int64_t> shape(x0.dim(), 1);
  shape[0] = x0.size(0);
  abar = abar.reshape(shape);
  return at::sqrt(abar) * x0 + at::sqrt(1 - abar) * noise;
}

std::vector<int64_t> spaced_timesteps(int T, int steps) {
  CL_CHECK(steps >= 1 && steps <= T, "sampler: steps must be in [1, " << T << "], got " << steps);
  std::vector<int64_t> ts;
  for (int k = steps - 1; k >= 0; --k) ts.push_back(int64_t(std::floor(double(k) * T / steps)));
  return ts;
}

namespace {
// Predicted clean sample and the epsilon consistent with it (after optional clipping),
// from an eps or a v prediction.
std::pair<at::Tensor, at::Tensor> x0_and_eps(const at::Tensor& x, const at::Tensor& out, double abar, bool clip,
                                             const std::string& prediction) {
  at::Tensor x0, eps_in;
  if (prediction == "v") {
    x0 = std::sqrt(abar) * x - std::sqrt(1 - abar) * out;
    eps_in = std::sqrt(1 - abar) * x + std::sqrt(abar) * out;
  } else {
    eps_in = out;
    x0 = (x - std::sqrt(1 - abar) * eps_in) / std::sqrt(abar);
  }
  if (!clip) return {x0, eps_in};
  x0 = x0.clamp(-1, 1);
  return {x0, (x - std::sqrt(abar) * x0) / std::sqrt(1 - abar)};
}
}  // namespace

DdimSampler::DdimSampler(const DdimOptions& o)
    : o_(o), sched_(NoiseSchedule::linear(o.train_steps, o.beta_start, o.beta_end)),
      ts_(spaced_timesteps(o.train_steps, o.steps)) {
  CL_CHECK(o.eta >= 0, "ddim: eta must be >= 0, got " << o.eta);
}

at::Tensor DdimSampler::step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const {
  const int64_t C = x.size(1);
  const double abar = sched_.alpha_bar[ts_[i]];
  const double abar_prev = i + 1 < int(ts_.size()) ? sched_.alpha_bar[ts_[i + 1]] : 1.0;
  auto [x0, eps] = x0_and_eps(x, model_out.narrow(1, 0, C), abar, o_.clip_x0, o_.prediction);
  const double sigma = o_.eta * std::sqrt((1 - abar_prev) / (1 - abar)) * std::sqrt(1 - abar / abar_prev);
  auto out = std::sqrt(abar_prev) * x0 + std::sqrt(std::max(0.0, 1 - abar_prev - sigma * sigma)) * eps;
  if (sigma > 0 && noise.defined()) out = out + sigma * noise;
  return out;
}

DdpmSampler::DdpmSampler(const DdpmOptions& o)
    : o_(o), sched_(NoiseSchedule::linear(o.train_steps, o.beta_start, o.beta_end)),
      ts_(spaced_timesteps(o.train_steps, o.steps)) {
  CL_CHECK(o.variance == "small" || o.variance == "large",
           "ddpm: variance must be `small` or `large`, got `" << o.variance << "`");
}

at::Tensor DdpmSampler::step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const {
  const int64_t C = x.size(1);
  const int n = int(ts_.size());
  // Respaced schedule: this step goes from ts_[i] to ts_[i+1] (or to the clean sample).
  auto abar_at = [&](int j) { return j < n ? sched_.alpha_bar[ts_[j]] : 1.0; };
  const double abar = abar_at(i), abar_prev = abar_at(i + 1);
  const double beta = 1 - abar / abar_prev;
  auto [x0, eps] = x0_and_eps(x, model_out.narrow(1, 0, C), abar, o_.clip_x0, o_.prediction);
  auto mean = (beta * std::sqrt(abar_prev) / (1 - abar)) * x0 +
              ((1 - abar_prev) * std::sqrt(1 - beta) / (1 - abar)) * x;
  if (i + 1 >= n) return mean;  // last step: no noise
  const double post_var = beta * (1 - abar_prev) / (1 - abar);
  at::Tensor log_var;
  if (model_out.size(1) >= 2 * C) {  // learned interpolation between log(post_var) and log(beta)
    auto frac = (model_out.narrow(1, C, C) + 1) / 2;
    log_var = frac * std::log(beta) + (1 - frac) * std::log(std::max(post_var, 1e-20));
  } else {
    log_var = at::full_like(x, std::log(o_.variance == "small" ? post_var : beta));
  }
  CL_CHECK(noise.defined(), "ddpm: step needs noise");
  return mean + at::exp(0.5 * log_var) * noise;
}

EulerFlowSampler::EulerFlowSampler(const EulerFlowOptions& o) : o_(o) {
  for (int i = 0; i < o.steps; ++i)
    ts_.push_back(int64_t(std::llround((1.0 - double(i) / o.steps) * o.time_scale)));
}

at::Tensor EulerFlowSampler::step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor&) const {
  const double t = 1.0 - double(i) / o_.steps, t_next = 1.0 - double(i + 1) / o_.steps;
  return x + (t_next - t) * model_out.narrow(1, 0, x.size(1));
}

const NoiseSchedule& EulerFlowSampler::schedule() const {
  CL_FAIL("euler_flow has no discrete noise schedule (it samples a rectified flow); train with a DDPM objective "
          "and sample with ddim or ddpm");
}

HeunFlowSampler::HeunFlowSampler(const HeunFlowOptions& o) : o_(o) {
  CL_CHECK(o.steps >= 1 && o.time_scale >= 1, "heun_flow: steps and time_scale must be >= 1");
  for (int k = 0; k < o.steps; ++k)
    for (int j = k; j <= k + 1; ++j) ts_.push_back(int64_t(std::llround((1.0 - double(j) / o.steps) * o.time_scale)));
}

at::Tensor HeunFlowSampler::step(int, const at::Tensor&, const at::Tensor&, const at::Tensor&) const {
  CL_FAIL("heun_flow evaluates the model twice per step and keeps the predictor's values: call advance(), "
          "not step()");
}

at::Tensor HeunFlowSampler::advance(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor&,
                                    std::vector<at::Tensor>& state) const {
  CL_CHECK(i >= 0 && i < int(ts_.size()), "heun_flow: evaluation " << i << " outside [0, " << ts_.size() << ")");
  const int k = i / 2;
  const double dt = -1.0 / o_.steps;  // t_{k+1} - t_k
  auto v = model_out.narrow(1, 0, x.size(1));
  if (i % 2 == 0) {  // predictor at t_k: remember the start point and its velocity
    state = {x, v};
    return x + dt * v;
  }
  CL_CHECK(state.size() == 2, "heun_flow: corrector of step " << k << " without its predictor (evaluations must "
                                                              "run in order on one trajectory)");
  auto out = state[0] + (0.5 * dt) * (state[1] + v);
  state.clear();
  return out;
}

const NoiseSchedule& HeunFlowSampler::schedule() const {
  CL_FAIL("heun_flow has no discrete noise schedule (it samples a rectified flow); train with a DDPM objective "
          "and sample with ddim or ddpm");
}

}  // namespace cachelab
