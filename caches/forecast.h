// Forecasters on top of any policy (cache-dit's use of TaylorSeer and FoCa with DBCache): the
// inner policy decides which sites compute; wherever it stands in for a whole site (its own
// stand-in: a copy, a cached residual), the stand-in is replaced by a forecast from the
// site's computed history, and the decision becomes `predict`.
//   sites of kind attn / mlp     their outputs are forecast
//   block / body / model sites   their residual (out - in) is forecast and added to the input
//                                (the current input, as the residual-reusing policies do)
// Forecasters: `taylorseer` (Newton's or the paper's Taylor form over the last order + 1
// computed points, caches/taylorseer.h) and `foca` (BDF2 slope, Heun or Euler step,
// caches/foca.h). A site the inner policy computes on some rows only keeps the inner's answer.
// Histories start again at each outer iteration (a chunk or block of a sequence pipeline).
//   cache: {type: forecast, forecaster: taylorseer, order: 2, inner: {type: dbcache, threshold: 0.2}}
// Around FORA, `taylorseer` is the TaylorSeer policy and `foca` the FoCa policy, sample for
// sample (tested).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "caches/foca.h"
#include "framework/config.h"
#include "framework/layer.h"
#include "framework/registry.h"

namespace cachelab {

struct ForecastOptions {
  ComponentSpec inner{"cache", {}};    // the policy that decides (required)
  std::string forecaster = "taylorseer";  // taylorseer | foca
  int order = 2;                       // taylorseer: forecast order
  std::string form;                    // taylorseer: newton | taylor; foca: heun | euler; "" = the forecaster's default
  template <class V>
  void fields(V& v) {
    v("inner", inner, "the policy that decides which sites compute (any cache that stands in for whole sites)");
    v("forecaster", forecaster, "taylorseer | foca: what replaces the inner policy's stand-ins");
    v("order", order, "taylorseer: forecast order (0 = the last computed value)");
    v("form", form, "taylorseer: newton | taylor; foca: heun | euler; empty = newton / heun");
  }
  template <class C>
  void check(C& c) const {
    c.require(!inner.empty(), "inner", "must name the policy that decides (e.g. {type: dbcache})");
    c.one_of("forecaster", forecaster, {"taylorseer", "foca"});
    c.require(order >= 0 && order <= 4, "order", "must be in [0, 4]");
    if (forecaster == "taylorseer") c.one_of("form", form, {"", "newton", "taylor"});
    else c.one_of("form", form, {"", "heun", "euler"});
  }
};

class ForecastLayer final : public NestingLayer {
 public:
  ForecastLayer(const ForecastOptions& o, const BuildContext& ctx);
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  struct History {
    std::vector<double> steps;
    std::vector<at::Tensor> values, coef;  // taylorseer
    FocaPolicy::History foca;
    bool empty() const { return steps.empty() && foca.steps.empty(); }
  };
  void record(History& h, double step, const at::Tensor& value) const;
  at::Tensor forecast(const History& h, double step) const;

  ForecastOptions o_;
  std::string form_;
  std::vector<bool> residual_;  // per site: forecast the residual (block, body, model) or the output
  std::vector<History> history_;
  int step_ = 0, outer_ = -1;
};

}  // namespace cachelab
