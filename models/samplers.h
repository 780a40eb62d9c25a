// DDIM and DDPM samplers over the DiT linear schedule, and Euler and Heun samplers for flow
// matching (options, classes). Prediction types: eps (the DiT's), v (v = sqrt(abar) eps -
// sqrt(1 - abar) x0) for DDIM/DDPM; the flow sampler reads a velocity v = eps - x0.
#pragma once
#include <string>

#include "framework/sampler.h"

namespace cachelab {

struct ScheduleOptions {
  int train_steps = 1000;
  double beta_start = 1e-4;
  double beta_end = 0.02;
  std::string prediction = "eps";  // what the model predicts: eps | v
  template <class V>
  void schedule_fields(V& v) {
    v("prediction", prediction, "what the model predicts: eps (noise) | v (velocity sqrt(abar) eps - sqrt(1-abar) x0)");
    v("train_steps", train_steps, "timesteps of the training schedule");
    v("beta_start", beta_start, "first beta of the linear schedule");
    v("beta_end", beta_end, "last beta of the linear schedule");
  }
  template <class C>
  void schedule_check(C& c, int steps) const {
    c.require(train_steps >= 2, "train_steps", "must be >= 2");
    c.one_of("prediction", prediction, {"eps", "v"});
    c.require(steps >= 1 && steps <= train_steps, "steps", "must be in [1, train_steps]");
    c.require(beta_start > 0 && beta_start < 1, "beta_start", "must be in (0, 1)");
    c.require(beta_end >= beta_start && beta_end < 1, "beta_end", "must be in [beta_start, 1)");
  }
};

// Stable Diffusion's DDIM (CompVis ddim.py, diffusers' DDIMScheduler in SD's configuration) is
// beta_schedule scaled_linear, beta_start 0.00085, beta_end 0.012, timestep_spacing leading,
// steps_offset 1, set_alpha_to_one false, clip_x0 false.
struct DdimOptions : ScheduleOptions {
  int steps = 50;
  double eta = 0.0;     // 0 = deterministic DDIM
  bool clip_x0 = true;  // clip the predicted clean sample to [-1, 1]
  std::string beta_schedule = "linear";      // linear | scaled_linear (betas = linspace(sqrt(start), sqrt(end))^2)
  std::string timestep_spacing = "floor";    // floor: floor(k T / steps); leading: k (T // steps) (CompVis)
  int steps_offset = 0;                      // added to every timestep (SD: 1)
  bool set_alpha_to_one = true;              // last step's alpha_bar_prev: 1, or alpha_bar[0] (SD)
  template <class V>
  void fields(V& v) {
    v("steps", steps, "number of sampling steps (evenly spaced timesteps)");
    v("eta", eta, "stochasticity: 0 = deterministic DDIM, 1 = DDPM-like");
    v("clip_x0", clip_x0, "clip the predicted clean sample to [-1, 1]");
    v("beta_schedule", beta_schedule, "linear | scaled_linear (Stable Diffusion: betas = linspace(sqrt(beta_start), sqrt(beta_end))^2)");
    v("timestep_spacing", timestep_spacing, "floor: floor(k T / steps) | leading: range(0, T, T // steps) as CompVis make_ddim_timesteps");
    v("steps_offset", steps_offset, "added to every timestep (Stable Diffusion: 1)");
    v("set_alpha_to_one", set_alpha_to_one, "the last step goes to alpha_bar = 1 (true) or to alpha_bar[0] (false, Stable Diffusion)");
    schedule_fields(v);
  }
  template <class C>
  void check(C& c) const {
    schedule_check(c, steps);
    c.require(eta >= 0, "eta", "must be >= 0");
    c.one_of("beta_schedule", beta_schedule, {"linear", "scaled_linear"});
    c.one_of("timestep_spacing", timestep_spacing, {"floor", "leading"});
    c.require(steps_offset >= 0 && steps_offset < train_steps, "steps_offset", "must be in [0, train_steps)");
  }
};

// Stable Diffusion's schedule: betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2 (float64).
NoiseSchedule scaled_linear_schedule(int T, double beta_start, double beta_end);
// CompVis make_ddim_timesteps("uniform"): range(0, T, T // steps) + offset, ascending (as the
// reference, ceil(T / (T // steps)) of them when steps does not divide T).
std::vector<int64_t> leading_timesteps(int T, int steps, int offset);

struct DdpmOptions : ScheduleOptions {
  int steps = 250;
  std::string variance = "small";  // small: posterior variance; large: beta
  bool clip_x0 = true;
  template <class V>
  void fields(V& v) {
    v("steps", steps, "number of sampling steps (respaced schedule)");
    v("variance", variance, "small (posterior) | large (beta); ignored when the model learns sigma");
    v("clip_x0", clip_x0, "clip the predicted clean sample to [-1, 1]");
    schedule_fields(v);
  }
  template <class C>
  void check(C& c) const {
    schedule_check(c, steps);
    c.one_of("variance", variance, {"small", "large"});
  }
};

// Rectified-flow Euler sampler: x_t = (1 - t) x0 + t eps for t from 1 down to 0 in `steps`
// even steps; the model predicts the velocity v = eps - x0 and x <- x + (t_next - t) v.
// Model timesteps are t x time_scale (rounded).
struct EulerFlowOptions {
  int steps = 50;
  int time_scale = 1000;
  template <class V>
  void fields(V& v) {
    v("steps", steps, "number of Euler steps from t = 1 to t = 0");
    v("time_scale", time_scale, "model timestep = round(t x time_scale)");
  }
  template <class C>
  void check(C& c) const {
    c.require(steps >= 1, "steps", "must be >= 1");
    c.require(time_scale >= 1, "time_scale", "must be >= 1");
  }
};

class EulerFlowSampler final : public Sampler {
 public:
  explicit EulerFlowSampler(const EulerFlowOptions& o);
  const std::vector<int64_t>& timesteps() const override { return ts_; }
  bool needs_noise() const override { return false; }
  at::Tensor step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const override;
  const NoiseSchedule& schedule() const override;

 private:
  EulerFlowOptions o_;
  std::vector<int64_t> ts_;
};

// Rectified-flow Heun sampler (second order, the trapezoid rule with an Euler predictor):
// the same convention and time grid as euler_flow, two model evaluations per step, so its
// timesteps() has 2 x steps entries: evaluation 2k at t_k (v1, predictor x' = x + dt v1),
// evaluation 2k+1 at t_{k+1} on x' (v2, then x <- x + dt (v1 + v2) / 2). Every step is a Heun
// step, the last one too (a flow model is trained at t = 0, unlike EDM's sigma = 0). Caches
// see each evaluation as one flat step (StepIndex index = evaluation).
struct HeunFlowOptions {
  int steps = 25;
  int time_scale = 1000;
  template <class V>
  void fields(V& v) {
    v("steps", steps, "number of Heun steps from t = 1 to t = 0 (2 model evaluations each)");
    v("time_scale", time_scale, "model timestep = round(t x time_scale)");
  }
  template <class C>
  void check(C& c) const {
    c.require(steps >= 1, "steps", "must be >= 1");
    c.require(time_scale >= 1, "time_scale", "must be >= 1");
  }
};

class HeunFlowSampler final : public Sampler {
 public:
  explicit HeunFlowSampler(const HeunFlowOptions& o);
  const std::vector<int64_t>& timesteps() const override { return ts_; }
  bool needs_noise() const override { return false; }
  // Fails: the corrector needs the predictor's values; pipelines call advance().
  at::Tensor step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const override;
  at::Tensor advance(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise,
                     std::vector<at::Tensor>& state) const override;
  const NoiseSchedule& schedule() const override;

 private:
  HeunFlowOptions o_;
  std::vector<int64_t> ts_;
};

// Guided diffusion's respaced sampler (ADM, as DiT's sample.py and sample_ddp.py call it),
// reproduced step for step:
//  - the kept timesteps follow `timestep_respacing` exactly as ADM's space_timesteps: "250"
//    takes round(c) for c = 0, 999/249, 2 x 999/249, ... accumulated by repeated addition and
//    rounded half to even (not our floor spacing); "ddimN" the integer stride giving N steps;
//    "10,15,20" that many steps from each of three equal sections;
//  - betas recomputed for the kept steps (1 - abar_t / abar_prev_kept), then every
//    coefficient derived from them in float64 and applied in float32;
//  - x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps, clipped only with clip_denoised;
//  - ddpm: the posterior mean, and a learned-range log variance when the model outputs 2C
//    channels (frac = (v + 1) / 2 between the clipped posterior and beta), else fixed
//    large (beta) or small (the posterior); no noise on the last step;
//  - ddim: ADM's ddim_sample (eta).
// The model is called with the original timesteps (what ADM's _WrappedModel passes).
struct AdmOptions {
  std::string timestep_respacing = "250";
  std::string method = "ddpm";
  double eta = 0.0;
  std::string variance = "large";
  bool clip_denoised = false;
  int train_steps = 1000;
  template <class V>
  void fields(V& v) {
    v("timestep_respacing", timestep_respacing, "ADM's respacing: \"250\", \"ddim50\", or section counts \"10,15,20\"");
    v("method", method, "ddpm (ADM p_sample, DiT's default) | ddim (ADM ddim_sample)");
    v("eta", eta, "ddim: stochasticity (0 = deterministic)");
    v("variance", variance, "fixed variance when the model does not learn sigma: large | small");
    v("clip_denoised", clip_denoised, "clip the predicted clean sample to [-1, 1] (DiT's sample.py: false)");
    v("train_steps", train_steps, "timesteps of the linear training schedule (betas scaled by 1000 / train_steps)");
  }
  template <class C>
  void check(C& c) const {
    c.one_of("method", method, {"ddpm", "ddim"});
    c.one_of("variance", variance, {"large", "small"});
    c.require(eta >= 0, "eta", "must be >= 0");
    c.require(train_steps >= 2, "train_steps", "must be >= 2");
  }
};

// ADM's space_timesteps: the kept original timesteps, ascending. Throws on a respacing that
// cannot be made (a section smaller than its count, no integer stride for "ddimN").
std::vector<int64_t> adm_space_timesteps(int train_steps, const std::string& respacing);

class AdmSampler final : public Sampler {
 public:
  explicit AdmSampler(const AdmOptions& o);
  const std::vector<int64_t>& timesteps() const override { return ts_; }
  bool needs_noise() const override { return o_.method == "ddpm" || o_.eta > 0; }
  at::Tensor step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const override;
  const NoiseSchedule& schedule() const override { return base_; }

 private:
  AdmOptions o_;
  NoiseSchedule base_;           // the training schedule (linear over train_steps)
  std::vector<int64_t> ts_;      // original timesteps, sampling order (descending)
  // Per kept step j (ascending, j = 0 the last sampling step), as ADM's GaussianDiffusion.
  std::vector<double> betas_, abar_, abar_prev_, sqrt_recip_, sqrt_recipm1_, post_var_, post_log_var_, coef1_, coef2_;
};

class DdimSampler final : public Sampler {
 public:
  explicit DdimSampler(const DdimOptions& o);
  const std::vector<int64_t>& timesteps() const override { return ts_; }
  bool needs_noise() const override { return o_.eta > 0; }
  at::Tensor step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const override;
  const NoiseSchedule& schedule() const override { return sched_; }

 private:
  DdimOptions o_;
  NoiseSchedule sched_;
  std::vector<int64_t> ts_;
};

class DdpmSampler final : public Sampler {
 public:
  explicit DdpmSampler(const DdpmOptions& o);
  const std::vector<int64_t>& timesteps() const override { return ts_; }
  bool needs_noise() const override { return true; }
  at::Tensor step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const override;
  const NoiseSchedule& schedule() const override { return sched_; }

 private:
  DdpmOptions o_;
  NoiseSchedule sched_;
  std::vector<int64_t> ts_;
};

}  // namespace cachelab
