// Confidence-gated Taylor (CG-Taylor, 2025): TaylorSeer's forecast moved from every
// sub-layer to the output of the last block only, and gated by how well the same kind of
// forecast does on the first block, which always runs:
//   every step: compute block 0; forecast its output from its history of computed steps
//     e = mean|forecast_0 - actual_0| / mean|actual_0|
//   e < threshold (and after the warm-up, within max_consecutive): blocks 1 .. L-1 are
//     skipped and the last block's output is its Taylor forecast;
//   otherwise every block runs and both histories (block 0, last block) take the step.
// The forecasts use caches/taylorseer.h's (newton or taylor form, order k); the decision
// signal is e.
#pragma once
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct CgTaylorOptions {
  double threshold = 0.05;      // gate on the first block's relative forecast error
  int order = 1;                // Taylor order k
  int warmup_steps = 3;         // steps always computed at the start
  int max_consecutive = 4;      // cap on consecutive forecast steps (-1 = no cap)
  std::string form = "taylor";  // taylor (the paper's) | newton
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "forecast the last block while block 0's forecast error (rel. L1) is below this");
    v("order", order, "Taylor order k of both forecasts");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
    v("max_consecutive", max_consecutive, "cap on consecutive forecast steps (-1 = no cap)");
    v("form", form, "taylor (finite-difference derivatives, the paper's) | newton (divided differences)");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= 0, "threshold", "must be >= 0");
    c.require(order >= 0 && order <= 4, "order", "must be in [0, 4]");
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
    c.require(max_consecutive >= -1, "max_consecutive", "must be >= 0, or -1 for no cap");
    c.one_of("form", form, {"newton", "taylor"});
  }
};

class CgTaylorPolicy final : public CachePolicy {
 public:
  explicit CgTaylorPolicy(const CgTaylorOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  struct History {
    std::vector<double> steps;
    std::vector<at::Tensor> values, coef;
    void add(double s, const at::Tensor& v, int order, const std::string& form);
  };
  CgTaylorOptions o_;
  std::vector<int> block_of_;
  int depth_ = 0, step_ = 0, consecutive_ = 0;
  bool forecast_ = false;
  History first_, last_;
};

}  // namespace cachelab
