// PLMS (pseudo linear multistep; Liu et al., 2022), as CompVis' PLMSSampler
// (ldm/models/diffusion/plms.py), the sampler of Stable Diffusion's txt2img --plms and, step for
// step, diffusers' PNDMScheduler with skip_prk_steps (SD's default, DeepCache's setup).
//
// Over the CompVis DDIM timesteps t_0 < ... < t_{n-1} (range(0, T, T // steps) + 1) and SD's
// scaled-linear schedule, each step k (from t = t_{n-1} down) forms e' from the guided epsilons
// and applies the deterministic DDIM update from alpha_bar(t) to the previous kept timestep's
// (alpha_bar[0] after the last step):
//   step 0: pseudo improved Euler, two model evaluations: e_0 at x, e_1 at the DDIM update of x
//           with e_0 (at the next timestep); e' = (e_0 + e_1) / 2
//   step 1: e' = (3 e - e_-1) / 2;  step 2: (23 e - 16 e_-1 + 5 e_-2) / 12
//   step >= 3: (55 e - 59 e_-1 + 37 e_-2 - 9 e_-3) / 24
// where e_-j are the first evaluations of the previous steps. timesteps() therefore holds n + 1
// evaluations: t_{n-1}, t_{n-2} (the warm-up's second call), t_{n-2}, ..., t_0. Coefficients are
// float32, as the reference's buffers.
#pragma once
#include <string>

#include "framework/sampler.h"

namespace cachelab {

struct PlmsOptions {
  int steps = 50;
  int train_steps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";
  template <class V>
  void fields(V& v) {
    v("steps", steps, "PLMS steps (one more model evaluation: the first step evaluates twice)");
    v("train_steps", train_steps, "timesteps of the training schedule");
    v("beta_start", beta_start, "first beta (Stable Diffusion: 0.00085)");
    v("beta_end", beta_end, "last beta (Stable Diffusion: 0.012)");
    v("beta_schedule", beta_schedule, "scaled_linear (Stable Diffusion) | linear");
  }
  template <class C>
  void check(C& c) const {
    c.require(train_steps >= 2, "train_steps", "must be >= 2");
    c.require(steps >= 1 && steps <= train_steps, "steps", "must be in [1, train_steps]");
    c.require(beta_start > 0 && beta_start < 1, "beta_start", "must be in (0, 1)");
    c.require(beta_end >= beta_start && beta_end < 1, "beta_end", "must be in [beta_start, 1)");
    c.one_of("beta_schedule", beta_schedule, {"scaled_linear", "linear"});
  }
};

class PlmsSampler final : public Sampler {
 public:
  explicit PlmsSampler(const PlmsOptions& o);
  const std::vector<int64_t>& timesteps() const override { return evals_; }
  bool needs_noise() const override { return false; }
  // Fails: the multistep needs earlier epsilons; pipelines call advance().
  at::Tensor step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const override;
  // Evaluation i (see timesteps()); `state` carries the warm-up's start point and the last
  // three epsilons of the trajectory.
  at::Tensor advance(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise,
                     std::vector<at::Tensor>& state) const override;
  const NoiseSchedule& schedule() const override { return sched_; }
  // The kept timesteps, sampling order (descending): one per step.
  const std::vector<int64_t>& step_timesteps() const { return ts_; }

 private:
  // The DDIM update of step k (0 = the first) with epsilon e.
  at::Tensor ddim(int k, const at::Tensor& x, const at::Tensor& e) const;
  PlmsOptions o_;
  NoiseSchedule sched_;
  std::vector<int64_t> ts_, evals_;
};

}  // namespace cachelab
