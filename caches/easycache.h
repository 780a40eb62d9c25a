// EasyCache (Zhou et al., 2025, "Less is Enough: Training-Free Video Diffusion Acceleration
// via Runtime-Adaptive Caching"): at run time, reuse the model's last computed
// transformation (output - input) while the output change it predicts from the input change,
// accumulated since the last computation, stays below a threshold. Nothing is fitted
// offline: the rate k is measured between the last two computed steps of the same run.
//
// On `site` (the whole denoiser, `model`, as the paper; or the block stack, `body`), per
// step t with input x_t:
//   the first `warmup_steps` steps and the last step compute;
//   otherwise, once k is known:  acc += k * mean|x_t - x_{t-1}| / mean|y_c|
//     (x_{t-1}: the input of the previous step, computed or not; y_c: the output of the
//     last computed step c)
//     acc < threshold: y_t = x_t + (y_c - x_c), the cached transformation;
//     otherwise compute and reset acc = 0.
//   After computing step t, with the computed step c before it:
//     k = mean|y_t - y_c| / mean|x_t - x_c|      (the transformation rate)
// The decision signal is acc. One decision per step for the whole batch, as the paper's.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "framework/layer.h"

namespace cachelab {

struct EasyCacheOptions {
  double threshold = 0.05;    // thresh (the paper's HunyuanVideo setting: 0.025)
  int warmup_steps = 5;       // ret_steps: the first steps always compute
  std::string site = "model";  // model: the denoiser's input and output (the paper's); body: the block stack
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "reuse while the accumulated predicted output change stays below this");
    v("warmup_steps", warmup_steps, "the first steps always compute (the paper: 5 of 50)");
    v("site", site, "model: the denoiser's input -> output transformation (the paper's); body: the block stack's");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= 0, "threshold", "must be >= 0");
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
    c.one_of("site", site, {"model", "body"});
  }
};

class EasyCachePolicy final : public SiteLayer {
 public:
  explicit EasyCachePolicy(const EasyCacheOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override { step_ = step.index; }
  Tensors at(SiteCall& call, const Next& next) override;
  double rate() const { return k_; }  // the last measured transformation rate (NaN before two computations)

 private:
  EasyCacheOptions o_;
  int site_ = -1, step_ = 0, count_ = 0;
  double k_ = kNoSignal, accumulated_ = 0;
  at::Tensor prev_input_;                  // x_{t-1}
  at::Tensor last_input_, last_output_;    // x_c, y_c of the last computed step
};

// UCache (stable-diffusion.cpp's `--cache-mode ucache`, docs/caching.md and its ucache.hpp;
// our reading): the same transformation reuse on the whole denoiser, with the input change
// measured from the last *computed* step and only inside a window of steps:
//   steps outside [start x T, end x T) compute and leave the state alone;
//   inside, once a rate k is known:  acc = decay x acc + k x mean|x_t - x_c| / mean|y_c|
//     acc < threshold x m x (relative ? mean|y| of the window's first computed output : 1):
//       y_t = x_t + (y_c - x_c);  otherwise compute (and acc = 0 with `reset`);
//   after computing step t: k = mean|y_t - y_c| / mean|x_t - x_c|.
// m is the reference's adaptive multiplier: 0.5 early in the run and 1.5 late, by a count of
// computed steps that its code never advances, so m = 0.5 throughout there; `adaptive: false`
// uses m = 1.
struct UCacheOptions {
  double threshold = 1.0, start = 0.15, end = 0.95, decay = 1.0;
  bool relative = true, reset = true, adaptive = true;
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "reuse while the accumulated predicted change stays below threshold x m (x the first output's mean |y| when relative)");
    v("start", start, "first fraction of the steps always computed (the window starts at start x T)");
    v("end", end, "steps from end x T on always compute");
    v("decay", decay, "the accumulated change decays by this factor per step (1: none)");
    v("relative", relative, "scale the threshold by the mean |output| of the window's first computed step");
    v("reset", reset, "reset the accumulated change when a step computes");
    v("adaptive", adaptive, "the reference's adaptive multiplier m (0.5 as its step counter stays at 0); false: m = 1");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= 0, "threshold", "must be >= 0");
    c.require(start >= 0 && start < 1, "start", "must be in [0, 1)");
    c.require(end > start && end <= 1, "end", "must be in (start, 1]");
    c.require(decay >= 0 && decay <= 1, "decay", "must be in [0, 1]");
  }
};

class UCachePolicy final : public SiteLayer {
 public:
  explicit UCachePolicy(const UCacheOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override { step_ = step.index; }
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  UCacheOptions o_;
  int site_ = -1, step_ = 0, first_ = 0, last_ = 0;  // the window [first_, last_)
  double k_ = kNoSignal, accumulated_ = 0, reference_norm_ = 0;
  at::Tensor last_input_, last_output_;  // x_c, y_c of the last computed step in the window
};

}  // namespace cachelab
