// Diffusion noise schedule (the DiT/ADM linear beta schedule) and samplers over it.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace cachelab {

// Discrete-time DDPM schedule: betas linear in [beta_start, beta_end] over T steps
// (DiT: 1e-4 .. 0.02, T = 1000), alpha_bar[t] = prod_{s<=t} (1 - beta[s]).
struct NoiseSchedule {
  int num_train_steps = 1000;
  std::vector<double> betas, alpha_bar;
  static NoiseSchedule linear(int T = 1000, double beta_start = 1e-4, double beta_end = 0.02);
  // x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t: [B] int64.
  at::Tensor q_sample(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& noise) const;
};

// A sampler walks a list of model timesteps (descending), one per model evaluation, and
// turns the model's output into the next point the model is evaluated at (a second-order
// sampler such as heun_flow evaluates twice per step: its list has two entries per step).
class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual const std::vector<int64_t>& timesteps() const = 0;  // model timesteps, sampling order
  int num_steps() const { return static_cast<int>(timesteps().size()); }
  // The model time of evaluation i, passed to the backbone: fractional on a continuous time
  // grid (dpm_solver: 949.05, ...), where timesteps() holds it rounded.
  virtual double model_time(int i) const { return double(timesteps()[size_t(i)]); }
  // Whether step() consumes fresh Gaussian noise (the runner draws it, seeded, so the
  // reference and every variant see the same noise).
  virtual bool needs_noise() const = 0;
  // x at timesteps()[i] -> x at timesteps()[i+1] (or the clean sample after the last).
  // model_out: the backbone output at step i (epsilon first C channels, optional
  // variance channels after). noise: same shape as x, or undefined.
  virtual at::Tensor step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const = 0;
  // step() for samplers whose evaluations of one step share values (heun_flow keeps the
  // step's start point and first velocity): `state` is the pipeline's, one per trajectory,
  // empty at the start. Pipelines call this; the default is step().
  virtual at::Tensor advance(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise,
                             std::vector<at::Tensor>& state) const {
    (void)state;
    return step(i, x, model_out, noise);
  }
  virtual const NoiseSchedule& schedule() const = 0;
};

// "Leading" even spacing of `steps` timesteps over [0, T): {0, T/steps, ...}, descending.
std::vector<int64_t> spaced_timesteps(int T, int steps);

}  // namespace cachelab
