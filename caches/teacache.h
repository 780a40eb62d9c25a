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
//
// Calibration (`cachelab calibrate`, when `calibration:` names a file): the run computes
// every step and records, per step, the input change d_t and the change of the body's
// residual (out - in) e_t; a least-squares polynomial of degree `fit_degree` e ~ poly(d)
// (numpy.polyfit's convention) is written to the file, which later runs read in place of
// `coefficients`; the file carries the backbone's digest (another backbone's file is an
// error). The threshold is then in units of the residual's relative change.
#pragma once
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct TeaCacheOptions {
  double threshold = 0.1;                     // rel_l1_thresh
  std::vector<double> coefficients = {1.0, 0.0};  // poly(d), highest degree first; [1, 0] = identity
  std::string calibration;                        // fitted coefficients (text file); "" = use `coefficients`
  int fit_degree = 4;                             // degree of the fitted polynomial
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "skip the body while the accumulated rescaled change stays below this");
    v("coefficients", coefficients, "rescaling polynomial of the input change, highest degree first ([1, 0] = none)");
    v("calibration", calibration, "file of coefficients fitted by `cachelab calibrate` (overrides coefficients)");
    v("fit_degree", fit_degree, "degree of the polynomial `cachelab calibrate` fits");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= 0, "threshold", "must be >= 0");
    c.require(!coefficients.empty() && coefficients.size() <= 8, "coefficients", "must hold 1 to 8 numbers");
    c.require(fit_degree >= 1 && fit_degree <= 6, "fit_degree", "must be in [1, 6]");
  }
};

// Least-squares polynomial fit y ~ poly(x) of `degree`, highest degree first.
std::vector<double> polyfit(const std::vector<double>& x, const std::vector<double>& y, int degree);

class TeaCachePolicy final : public CachePolicy, public Calibrator {
 public:
  explicit TeaCachePolicy(const TeaCacheOptions& o) : o_(o), coef_(o.coefficients) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  bool wants_tap(int tap) const override { return tap == tap_; }
  void tap(int tap, const at::Tensor& value) override;

  double rescale(double d) const;
  Calibrator* calibrator() override { return o_.calibration.empty() ? nullptr : this; }
  void start_calibration() override;
  std::string finish_calibration() override;
  std::string calibration_file() const override { return o_.calibration; }

 private:
  TeaCacheOptions o_;
  std::vector<double> coef_;
  std::string digest_;  // the backbone's (calibration files carry it)
  bool calibrating_ = false, loaded_ = false;
  double raw_ = kNoSignal;
  std::vector<double> fit_x_, fit_y_;
  at::Tensor prev_residual_;
  int tap_ = -1, body_ = -1;
  int step_ = 0, count_ = 0;
  double accumulated_ = 0, signal_ = kNoSignal;
  at::Tensor prev_input_, residual_;
};

}  // namespace cachelab
