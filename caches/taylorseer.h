// TaylorSeer (Liu et al., 2025): compute the cached sub-layers every `interval` steps and,
// in between, forecast their outputs from the last computed ones instead of copying them.
//
// Two forecasts over the last order+1 computed outputs F(s_0) .. F(s_k) (s = step index):
//   newton (default)  Newton's divided-difference polynomial through those points,
//                     evaluated at the current step: exact for features that are
//                     polynomials of degree <= order in the step index.
//   taylor            the paper's form: derivative estimates by repeated difference
//                     quotients between consecutive computed steps, d_0 = F(s_k),
//                     d_{i+1} = (d_i(s_k) - d_i(s_{k-1})) / (s_k - s_{k-1}), and
//                     F(s) ~ sum_i d_i (s - s_k)^i / i!  (exact for degree <= 1 only).
// Until order+1 outputs are known the forecast uses as many as there are (a copy after
// the first computation).
#pragma once
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct TaylorSeerOptions {
  int interval = 4;                                   // N: full computation every N-th step
  int order = 2;                                      // k: forecast order
  std::vector<std::string> layers = {"attn", "mlp"};  // site kinds forecast in every block
  int warmup_steps = 1;                               // steps always computed at the start
  std::string form = "newton";                        // newton | taylor
  template <class V>
  void fields(V& v) {
    v("interval", interval, "compute the selected sites every N-th step, forecast in between");
    v("order", order, "forecast order k (0 = copy, as FORA)");
    v("layers", layers, "site kinds forecast in every block (attn, mlp, block)");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
    v("form", form, "newton (divided differences, exact for degree <= order) | taylor (the paper's form)");
  }
  template <class C>
  void check(C& c) const {
    c.require(interval >= 1, "interval", "must be >= 1");
    c.require(order >= 0 && order <= 4, "order", "must be in [0, 4]");
    c.require(!layers.empty(), "layers", "must name at least one site kind");
    c.each_one_of("layers", layers, {"attn", "mlp", "block"});
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
    c.one_of("form", form, {"newton", "taylor"});
  }
};

class TaylorSeerPolicy final : public CachePolicy {
 public:
  explicit TaylorSeerPolicy(const TaylorSeerOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override { step_ = step.index; }
  Tensors at(SiteCall& call, const Next& next) override;

  // The forecast at step `s` from computed points (steps[i], values[i]), oldest first.
  static at::Tensor forecast(const std::vector<double>& steps, const std::vector<at::Tensor>& values, double s,
                             const std::string& form);
  // The same in two halves: coefficients once per computed step, evaluation per forecast
  // (k multiply-adds instead of the k^2 of a difference table).
  static std::vector<at::Tensor> coefficients(const std::vector<double>& steps, const std::vector<at::Tensor>& values,
                                              const std::string& form);
  static at::Tensor evaluate(const std::vector<at::Tensor>& coef, const std::vector<double>& steps, double s,
                             const std::string& form);

 private:
  struct History {
    std::vector<double> steps;
    std::vector<at::Tensor> values, coef;
  };
  TaylorSeerOptions o_;
  std::vector<bool> selected_;
  std::vector<History> history_;
  int step_ = 0;
};

}  // namespace cachelab
