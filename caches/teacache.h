// TeaCache (Liu et al., 2025): skip the whole block stack (`body`) while the accumulated,
// polynomial-rescaled relative L1 change of block 0's timestep-modulated input stays
// below a threshold; a skipped body adds the residual (out - in) of its last computation
// to the current input.
//
// Per step t > 0, from the model's tap `blocks.0.modulated_input` m_t:
//   d_t = mean|m_t - m_{t-1}| / mean|m_{t-1}|,   acc += poly(d_t)   (coefficients, highest
//   degree first, as numpy.poly1d; TeaCache fits them per model on calibration runs)
//   acc < threshold: reuse the body's residual;  otherwise compute it and reset acc = 0.
// The first step and the last step always compute.
#pragma once
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct TeaCacheOptions {
  double threshold = 0.1;                     // rel_l1_thresh
  std::vector<double> coefficients = {1.0, 0.0};  // poly(d), highest degree first; [1, 0] = identity
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "skip the body while the accumulated rescaled change stays below this");
    v("coefficients", coefficients, "rescaling polynomial of the input change, highest degree first ([1, 0] = none)");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= 0, "threshold", "must be >= 0");
    c.require(!coefficients.empty() && coefficients.size() <= 8, "coefficients", "must hold 1 to 8 numbers");
  }
};

class TeaCachePolicy final : public CachePolicy {
 public:
  explicit TeaCachePolicy(const TeaCacheOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  bool wants_tap(int tap) const override { return tap == tap_; }
  void tap(int tap, const at::Tensor& value) override;

  double rescale(double d) const;

 private:
  TeaCacheOptions o_;
  int tap_ = -1, body_ = -1;
  int step_ = 0, count_ = 0;
  double accumulated_ = 0, signal_ = kNoSignal;
  at::Tensor prev_input_, residual_;
};

}  // namespace cachelab
