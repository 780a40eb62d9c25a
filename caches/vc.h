// Variance compensation (Q&C, Ding et al., 2025), our reading: caching and quantization
// together add exposure bias, visible as a drift of the spread of the model's output along
// the trajectory. Around any policy (`inner`), the model-site output o of every step is
// rescaled about each sample's mean so that its spread matches what the full-precision,
// uncached model gives at that step:
//     o' = m + (o - m) * f,   f = 1 + strength * (sigma*_t / sigma_t - 1)
// where m is each sample's mean, sigma_t the batch mean of the samples' standard deviations
// now, and sigma*_t the same measured by `cachelab calibrate` (which runs the variant with
// every site computed and the quantizer observing in full precision) and stored in `table`
// with the backbone digest (from its first calibration run only). The factor adapts at every
// step to the run's own spread.
//
//   cache: {type: vc, inner: {type: fora, interval: 3}, table: results/calib/vc-dit-mnist.safetensors}
//
// Logged per step: /sites/extra/vc_factor on the model site.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "framework/layer.h"
#include "framework/registry.h"

namespace cachelab {

struct VcOptions {
  ComponentSpec inner{"cache", {}};
  std::string table;
  double strength = 1.0;
  template <class V>
  void fields(V& v) {
    v("inner", inner, "the cache policy inside (none = compensate a quantizer alone)");
    v("table", table, "file of the full-precision output spread per step, written by `cachelab calibrate`");
    v("strength", strength, "fraction of the correction applied (0 = none, 1 = match the spread)");
  }
  template <class C>
  void check(C& c) const {
    c.require(!table.empty(), "table", "must name the spread file (written by `cachelab calibrate`)");
    c.require(strength >= 0 && strength <= 2, "strength", "must be in [0, 2]");
  }
};

class VcCorrector final : public Corrector {
 public:
  VcCorrector(const VcOptions& o, const BuildContext& ctx);
  ~VcCorrector() override;
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  void start_calibration() override;
  std::string finish_calibration() override;
  std::string calibration_file() const override { return o_.table; }

  // The batch mean of per-sample standard deviations of o [B, ...].
  static double spread(const at::Tensor& o);

 private:
  void load();
  VcOptions o_;
  std::vector<double> target_;          // sigma*_t
  std::vector<double> sum_, count_;     // calibration sums per step
  std::string digest_, path_;
  int step_ = 0, steps_ = 0, extra_ = -1, calibration_runs_ = 0;
  bool calibrating_ = false, loaded_ = false;
};

}  // namespace cachelab
