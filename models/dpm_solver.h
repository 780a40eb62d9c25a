// DPM-Solver++ (Lu et al., 2022), multistep, as the DPM-Solver code PixArt-alpha ships
// (diffusion/model/dpm_solver.py, called through its DPMS wrapper: algorithm dpmsolver++,
// solver_type dpmsolver, a noise-prediction model, the discrete linear schedule) and
// reproduced step for step:
//  - the VP schedule of the discrete model: log alpha_n = 0.5 sum_{m<=n} log(1 - beta_m) at
//    continuous times t_n = (n + 1) / N, linearly interpolated in between (log-SNR clipped
//    at -5.1 near t = 1, which the linear schedule never reaches);
//  - `steps` + 1 times from t = 1 to t = 1 / N: time_uniform (linspace, float32 as torch
//    makes them), time_quadratic (squares of a linspace of square roots) or logSNR (uniform
//    in lambda = log alpha - log sigma, inverted through the interpolation);
//  - the model evaluated at model time (t - 1 / N) x 1000 (fractional: 999, 949.05, ...)
//    at the first `steps` times; its eps (the first C channels; a learned variance is
//    ignored) becomes the data prediction x0 = (x - sigma eps) / alpha;
//  - multistep updates of order min(order, evaluations so far), and with
//    lower_order_final and fewer than 10 steps, no higher than the steps left.
// Coefficients are computed in float64 from the float32 times and applied in float32.
#pragma once
#include <string>
#include <vector>

#include "framework/sampler.h"

namespace cachelab {

struct DpmSolverOptions {
  int steps = 20;
  int order = 2;
  std::string skip_type = "time_uniform";
  std::string method = "multistep";
  bool lower_order_final = true;
  int train_steps = 1000;
  double beta_start = 1e-4;
  double beta_end = 0.02;
  template <class V>
  void fields(V& v) {
    v("steps", steps, "model evaluations (PixArt-alpha: 20)");
    v("order", order, "solver order 1..3 (PixArt-alpha: 2)");
    v("skip_type", skip_type, "time grid: time_uniform (PixArt-alpha) | logSNR | time_quadratic");
    v("method", method, "multistep (the only method; DPM-Solver's singlestep variants are not built)");
    v("lower_order_final", lower_order_final, "lower orders at the final steps when steps < 10");
    v("train_steps", train_steps, "timesteps of the discrete training schedule");
    v("beta_start", beta_start, "first beta of the linear schedule");
    v("beta_end", beta_end, "last beta of the linear schedule");
  }
  template <class C>
  void check(C& c) const {
    c.require(order >= 1 && order <= 3, "order", "must be 1, 2 or 3");
    c.require(steps >= order, "steps", "must be >= order");
    c.one_of("skip_type", skip_type, {"time_uniform", "logSNR", "time_quadratic"});
    c.one_of("method", method, {"multistep"});
    c.require(train_steps >= 2, "train_steps", "must be >= 2");
    c.require(beta_start > 0 && beta_start < 1, "beta_start", "must be in (0, 1)");
    c.require(beta_end >= beta_start && beta_end < 1, "beta_end", "must be in [beta_start, 1)");
  }
};

class DpmSolverSampler final : public Sampler {
 public:
  explicit DpmSolverSampler(const DpmSolverOptions& o);
  // Model times rounded to integers (what caches and the run file see).
  const std::vector<int64_t>& timesteps() const override { return ts_; }
  double model_time(int i) const override { return model_times_[size_t(i)]; }
  bool needs_noise() const override { return false; }
  // Fails: a multistep update needs the earlier data predictions; pipelines call advance().
  at::Tensor step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const override;
  // state: the data predictions of the last `order` evaluations.
  at::Tensor advance(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise,
                     std::vector<at::Tensor>& state) const override;
  const NoiseSchedule& schedule() const override { return sched_; }
  // Continuous times t_0 = 1 .. t_steps = 1 / N (float32 values), for tests.
  const std::vector<double>& times() const { return times_; }

 private:
  double log_alpha(double t) const;
  double lambda(double t) const;
  DpmSolverOptions o_;
  NoiseSchedule sched_;
  std::vector<double> t_array_, log_alpha_array_;  // the interpolation key points (float32 values)
  std::vector<double> times_, model_times_;
  std::vector<int64_t> ts_;
};

}  // namespace cachelab
