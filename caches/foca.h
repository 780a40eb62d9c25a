// FoCa, Forecast then Calibrate (Zheng et al., 2025): a cached feature F(s) along the
// sampling steps s is read as the solution of an ODE, F' = g(s), sampled exactly at the
// steps where the site is computed (every `interval` steps). Between them it is
// integrated from the newest computed point s_k over Delta = s - s_k:
//   forecast   the slope at s_k by the (variable-step) BDF2 formula over the last three
//              computed points, g_k = derivative at s_k of the quadratic through them;
//              the Euler forecast is F_k + Delta g_k (form `euler`, forecast only).
//   calibrate  the slope at s is extrapolated from the slopes of the last two computed
//              points, g~(s) = g_k + Delta (g_k - g_{k-1}) / (s_k - s_{k-1}), and the step is
//              Heun's trapezoid F(s) = F_k + Delta/2 (g_k + g~(s))  (form `heun`, default).
// Heun is exact for features that are quadratic in s once four points are known (both
// slopes are then exact and the slope is linear); until then it uses what it has (a copy
// after one point, a secant slope after two). The paper's code is not public: this is
// our reading of its "BDF2 forecast, Heun calibration on cached features".
#pragma once
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct FocaOptions {
  int interval = 4;                                   // N: full computation every N-th step
  std::vector<std::string> layers = {"attn", "mlp"};  // site kinds forecast in every block
  int warmup_steps = 1;                               // steps always computed at the start
  std::string form = "heun";                          // heun | euler
  template <class V>
  void fields(V& v) {
    v("interval", interval, "compute the selected sites every N-th step, forecast in between");
    v("layers", layers, "site kinds forecast in every block (attn, mlp, block)");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
    v("form", form, "heun (BDF2 slope + Heun calibration) | euler (BDF2 slope, forecast only)");
  }
  template <class C>
  void check(C& c) const {
    c.require(interval >= 1, "interval", "must be >= 1");
    c.require(!layers.empty(), "layers", "must name at least one site kind");
    c.each_one_of("layers", layers, {"attn", "mlp", "block"});
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
    c.one_of("form", form, {"heun", "euler"});
  }
};

class FocaPolicy final : public CachePolicy {
 public:
  explicit FocaPolicy(const FocaOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  // Steps count within an outer iteration (a chunk of a sequence pipeline is a new
  // trajectory: the histories start again).
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

  // The history of one site: computed points, oldest first (at most 3), and the slope
  // estimated at each of the last two (undefined until known).
  struct History {
    std::vector<double> steps;
    std::vector<at::Tensor> values;
    at::Tensor slope, prev_slope;
    double prev_step = 0;
    void add(double s, const at::Tensor& v);  // appends a computed point, updates the slopes
  };
  // F(s) from the history; `form` is heun or euler.
  static at::Tensor forecast(const History& h, double s, const std::string& form);

 private:
  FocaOptions o_;
  std::vector<bool> selected_;
  std::vector<History> history_;
  int step_ = 0, outer_ = 0;
};

}  // namespace cachelab
