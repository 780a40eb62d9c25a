// ERTACache's trajectory-aware timestep adjustment (Ma et al., 2025), our reading: on a
// step where the inner policy stood in for some site (a cached step), the sampler's
// integration interval is scaled by a per-step coefficient phi_t fitted offline, so that
// the cached step moves the sample as far as the computed step would have:
//     x_next = x + phi_t * (s_next - s_t) * o_cached
// DDIM (in x / sqrt(abar) against sigma = sqrt(1 - abar) / sqrt(abar)) and the Euler flow
// sampler are both Euler steps of this form, so scaling the interval is the same as
// scaling the prediction channels of the model output (the first C channels, C = the
// input's; learned-variance channels are left alone). With o the cached prediction and
// o* what the model computes at the same point, phi_t = <o*, o> / <o, o> (least squares
// over every calibration sample). By default the fit follows the variant's own cached
// trajectory (`trajectory: cached`, the trajectory-aware part), with any corrector inside
// already applied; `trajectory: uncached` fits along the uncached one instead.
//
//   cache: {type: interval_adjust, inner: {type: schedule, file: ...}, table: results/calib/ia.safetensors}
//
// Logged per step: /sites/extra/interval_scale on the model site (1 on computed steps).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "framework/layer.h"
#include "framework/registry.h"

namespace cachelab {

struct IntervalAdjustOptions {
  ComponentSpec inner{"cache", {}};  // the policy whose cached steps are adjusted
  std::string table;                 // fitted phi per step (safetensors), relative to the project root
  bool apply = true;                 // false: the inner policy alone (an ablation)
  std::string trajectory = "cached";  // the calibration trajectory: cached | uncached
  double clamp = 0.5;                 // |phi - 1| is limited to this at fit time
  template <class V>
  void fields(V& v) {
    v("inner", inner, "the cache policy whose cached steps get an adjusted integration interval");
    v("table", table, "file of the fitted interval scale per step, written by `cachelab calibrate`");
    v("apply", apply, "apply the adjustment (false = the inner policy alone)");
    v("trajectory", trajectory, "calibration follows the variant's own `cached` trajectory or the `uncached` one");
    v("clamp", clamp, "the fitted scale is kept within [1 - clamp, 1 + clamp]");
  }
  template <class C>
  void check(C& c) const {
    c.require(!inner.empty(), "inner", "must name the adjusted policy, e.g. {type: fora, interval: 3}");
    c.require(!table.empty(), "table", "must name the scale file (written by `cachelab calibrate`)");
    c.one_of("trajectory", trajectory, {"cached", "uncached"});
    c.require(clamp > 0 && clamp <= 1, "clamp", "must be in (0, 1]");
  }
};

class IntervalAdjust final : public Corrector {
 public:
  IntervalAdjust(const IntervalAdjustOptions& o, const BuildContext& ctx);
  // Around a given inner layer (o.inner is not built).
  IntervalAdjust(const IntervalAdjustOptions& o, std::unique_ptr<SiteLayer> inner);
  ~IntervalAdjust() override;
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  void start_calibration() override;
  std::string finish_calibration() override;
  std::string calibration_file() const override { return o_.table; }

 private:
  void load();
  IntervalAdjustOptions o_;
  std::string path_, digest_;
  std::vector<double> phi_, sxy_, sxx_;
  int step_ = 0, steps_ = 0, extra_ = -1;
  bool calibrating_ = false, loaded_ = false;
  bool stood_in_ = false, bypass_ = false;  // during the model site's call
};

}  // namespace cachelab
