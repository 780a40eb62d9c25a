// Spectrum (stable-diffusion.cpp's `--cache-mode spectrum`, after "Spectrum: Adaptive Spectral
// Feature Forecasting for Efficient Diffusion Sampling"; our reading of its spectrum.hpp):
// skip whole denoiser evaluations and forecast the model output from the last computed ones,
// a blend of a ridge regression on a Chebyshev basis of the step and a Taylor step.
//
// With tau(s) = 2 s / T - 1 (the reference writes T = 50) and the last K = max(m + 1, 6)
// computed outputs y_k at tau_k:
//   Chebyshev:  X[k] = (T_0(tau_k) .. T_m(tau_k)),  x* = (T_0(tau_s) .. T_m(tau_s)),
//               c = sum_k (X (X^T X + lam I)^-1 x*)_k y_k
//   Taylor:     t = y_last + 0.5 (y_last - y_prev)
//   forecast:   (1 - w) t + w c
// A step forecasts when s >= warmup, s < stop x T, two outputs are known and
// (forecasts since the last computation + 1) % floor(ws) != 0; the window ws starts at
// `window` and grows by `flex` at every computed step after the warm-up.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct SpectrumOptions {
  double w = 0.4, lam = 1.0, window = 2.0, flex = 0.5, stop = 0.9;
  int m = 3, warmup = 4;
  template <class V>
  void fields(V& v) {
    v("w", w, "weight of the Chebyshev forecast against the Taylor step (0: Taylor only, 1: Chebyshev only)");
    v("m", m, "degree of the Chebyshev basis");
    v("lam", lam, "ridge regularization of the Chebyshev fit");
    v("window", window, "initial window: a forecast run ends every floor(window) steps with a computation");
    v("flex", flex, "growth of the window at every computed step after the warm-up");
    v("warmup", warmup, "the first steps always compute");
    v("stop", stop, "steps from stop x T on always compute");
  }
  template <class C>
  void check(C& c) const {
    c.require(w >= 0 && w <= 1, "w", "must be in [0, 1]");
    c.require(m >= 0 && m <= 8, "m", "must be in [0, 8]");
    c.require(lam >= 0, "lam", "must be >= 0");
    c.require(window >= 1, "window", "must be >= 1");
    c.require(flex >= 0, "flex", "must be >= 0");
    c.require(warmup >= 0, "warmup", "must be >= 0");
    c.require(stop > 0 && stop <= 1, "stop", "must be in (0, 1]");
  }
};

class SpectrumPolicy final : public SiteLayer {
 public:
  explicit SpectrumPolicy(const SpectrumOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override { step_ = step.index; }
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  double tau(int step) const { return 2.0 * step / steps_ - 1.0; }
  // The ridge Chebyshev forecast's weight of each stored output.
  std::vector<double> chebyshev_weights(const std::vector<double>& taus, double at) const;

  SpectrumOptions o_;
  int site_ = -1, step_ = 0, steps_ = 1, forecasts_ = 0;
  double ws_ = 2;
  std::vector<at::Tensor> outputs_;
  std::vector<double> taus_;
};

}  // namespace cachelab
