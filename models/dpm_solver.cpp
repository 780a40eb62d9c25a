#include "models/dpm_solver.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "framework/error.h"

namespace cachelab {
namespace {

constexpr double kClippedLambda = -5.1;  // DPM-Solver's log-SNR floor near t = 1

// Piecewise-linear y(x) through (xp, yp), xp ascending; beyond the ends the outermost
// segment extends (DPM-Solver's interpolate_fn).
double interpolate(double x, const std::vector<double>& xp, const std::vector<double>& yp) {
  const size_t K = xp.size();
  size_t k = size_t(std::upper_bound(xp.begin(), xp.end(), x) - xp.begin());
  k = std::min(std::max<size_t>(k, 1), K - 1) - 1;  // segment [k, k + 1]
  return yp[k] + (x - xp[k]) * (yp[k + 1] - yp[k]) / (xp[k + 1] - xp[k]);
}

// The same in float32 arithmetic, as the reference computes its logSNR grid.
float interpolate_f(float x, const std::vector<float>& xp, const std::vector<float>& yp) {
  const size_t K = xp.size();
  size_t k = size_t(std::upper_bound(xp.begin(), xp.end(), x) - xp.begin());
  k = std::min(std::max<size_t>(k, 1), K - 1) - 1;
  return yp[k] + (x - xp[k]) * (yp[k + 1] - yp[k]) / (xp[k + 1] - xp[k]);
}

std::vector<double> values(const at::Tensor& t) {
  auto d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

}  // namespace

DpmSolverSampler::DpmSolverSampler(const DpmSolverOptions& o)
    : o_(o), sched_(NoiseSchedule::linear(o.train_steps, o.beta_start, o.beta_end)) {
  CL_CHECK(o.order >= 1 && o.order <= 3, "dpm_solver: order must be 1, 2 or 3, got " << o.order);
  CL_CHECK(o.steps >= o.order, "dpm_solver: steps (" << o.steps << ") must be >= order (" << o.order << ")");
  CL_CHECK(o.method == "multistep", "dpm_solver: method `" << o.method << "` is not built (multistep only)");
  // log alpha_n in float64, clipped where the log-SNR falls below -5.1, stored as float32.
  std::vector<double> la;
  double acc = 0.0;
  for (double b : sched_.betas) la.push_back(0.5 * (acc += std::log(1.0 - b)));
  size_t clip = 0;
  for (double v : la)
    if (v - 0.5 * std::log(1.0 - std::exp(2.0 * v)) < kClippedLambda) ++clip;
  la.resize(la.size() - clip);
  const int64_t N = int64_t(la.size());
  log_alpha_array_ = values(at::tensor(la, at::kDouble).to(at::kFloat));
  t_array_ = values(at::linspace(0.0, 1.0, N + 1, at::kFloat).narrow(0, 1, N));
  const double t_T = 1.0, t_0 = 1.0 / double(N);
  at::Tensor ts;
  if (o.skip_type == "time_uniform") {
    ts = at::linspace(t_T, t_0, o.steps + 1, at::kFloat);
  } else if (o.skip_type == "time_quadratic") {
    ts = at::linspace(std::sqrt(t_T), std::sqrt(t_0), o.steps + 1, at::kFloat).pow(2);
  } else if (o.skip_type == "logSNR") {
    // Uniform in lambda, in float32 as the reference (its grid is float32 roundoff away,
    // up to 1e-5 in t, from the exact one).
    std::vector<float> xp(t_array_.begin(), t_array_.end()), yp(log_alpha_array_.begin(), log_alpha_array_.end());
    auto lambda_f = [&](float t) {
      const float la = interpolate_f(t, xp, yp);
      return la - 0.5f * std::log(1.0f - std::exp(2.0f * la));
    };
    auto lambdas = at::linspace(lambda_f(float(t_T)), lambda_f(float(t_0)), o.steps + 1, at::kFloat).contiguous();
    std::vector<float> rev_la(yp.rbegin(), yp.rend()), rev_t(xp.rbegin(), xp.rend());
    std::vector<float> t;
    for (int64_t k = 0; k <= o.steps; ++k) {
      const float l = lambdas.data_ptr<float>()[k];
      // -0.5 logaddexp(0, -2 lambda), as torch.logaddexp evaluates it
      const float log_a = -0.5f * (std::max(0.0f, -2.0f * l) + std::log1p(std::exp(-std::abs(2.0f * l))));
      t.push_back(interpolate_f(log_a, rev_la, rev_t));
    }
    ts = at::tensor(t, at::kFloat);
  } else {
    CL_FAIL("dpm_solver: skip_type must be time_uniform, logSNR or time_quadratic, got `" << o.skip_type << "`");
  }
  times_ = values(ts);
  // The model time of DPM-Solver's discrete wrapper, in float32 as the reference computes it.
  model_times_ = values(((ts - 1.0 / double(N)) * 1000.0).narrow(0, 0, o.steps));
  for (double m : model_times_) ts_.push_back(int64_t(std::llround(m)));
}

double DpmSolverSampler::log_alpha(double t) const { return interpolate(t, t_array_, log_alpha_array_); }

double DpmSolverSampler::lambda(double t) const {
  const double la = log_alpha(t);
  return la - 0.5 * std::log(1.0 - std::exp(2.0 * la));
}

at::Tensor DpmSolverSampler::step(int, const at::Tensor&, const at::Tensor&, const at::Tensor&) const {
  CL_FAIL("dpm_solver is a multistep solver that keeps earlier data predictions: call advance(), not step()");
}

at::Tensor DpmSolverSampler::advance(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor&,
                                     std::vector<at::Tensor>& state) const {
  CL_CHECK(i >= 0 && i < o_.steps, "dpm_solver: step " << i << " is outside [0, " << o_.steps << ")");
  CL_CHECK(int(state.size()) == std::min(i, o_.order),
           "dpm_solver: step " << i << " expects the data predictions of the earlier steps (state holds "
                               << state.size() << "); steps must be taken in order");
  const int64_t C = x.size(1);
  const double s = times_[size_t(i)], t = times_[size_t(i) + 1];
  const double la_s = log_alpha(s), sigma_s = std::sqrt(1.0 - std::exp(2.0 * la_s));
  // Data prediction at the current time from the model's eps.
  state.push_back((x - sigma_s * model_out.narrow(1, 0, C)) / std::exp(la_s));
  if (int(state.size()) > o_.order) state.erase(state.begin());
  const int k = i + 1;  // index of the target time
  int order = std::min(o_.order, k);
  if (o_.lower_order_final && o_.steps < 10) order = std::min(order, o_.steps + 1 - k);

  const double la_t = log_alpha(t), alpha_t = std::exp(la_t), sigma_t = std::sqrt(1.0 - std::exp(2.0 * la_t));
  const double lambda_t = la_t - std::log(sigma_t), lambda_0 = la_s - std::log(sigma_s);
  const double h = lambda_t - lambda_0, phi_1 = std::expm1(-h);
  const size_t n = state.size();
  const at::Tensor& m0 = state[n - 1];
  auto x_t = (sigma_t / sigma_s) * x - (alpha_t * phi_1) * m0;
  if (order == 1) return x_t;
  const double lambda_1 = lambda(times_[size_t(i) - 1]);
  const double r0 = (lambda_0 - lambda_1) / h;
  auto d1_0 = (1.0 / r0) * (m0 - state[n - 2]);
  if (order == 2) return x_t - (0.5 * (alpha_t * phi_1)) * d1_0;
  const double lambda_2 = lambda(times_[size_t(i) - 2]);
  const double r1 = (lambda_1 - lambda_2) / h;
  auto d1_1 = (1.0 / r1) * (state[n - 2] - state[n - 3]);
  auto d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1);
  auto d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1);
  const double phi_2 = phi_1 / h + 1.0, phi_3 = phi_2 / h - 0.5;
  return x_t + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2;
}

}  // namespace cachelab
