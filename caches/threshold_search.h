// Threshold search: calibrates the threshold of any threshold policy (teacache, magcache,
// fbcache, dbcache, cg_taylor ...) for a backbone, sampler and guidance, to reach a
// requested FLOPs speedup or a requested PSNR against the uncached samples.
//
//   cache: {type: threshold_search, inner: {type: magcache, calibration: ...},
//           target: flops_speedup, value: 2.0, lo: 0, hi: 0.5, file: results/calib/mag-2x.txt}
//
// `cachelab calibrate EXP.yaml` runs the uncached reference once, then the inner policy at
// `grid` thresholds evenly spaced in [lo, hi] (the curve), then `refine` bisections between
// the two neighbouring curve points where the target is crossed. Of the points that reach
// the target it keeps the best on the other axis (the highest PSNR for a speedup target,
// the highest speedup for a PSNR target), so a non-monotone curve does not mislead it; when
// none reaches it, the closest. The curve and the choice go to `file` with the backbone's
// digest; later runs read the value from it and run the inner policy with it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "framework/layer.h"
#include "framework/multi_run.h"
#include "framework/registry.h"
#include "framework/run_options.h"

namespace cachelab {

struct ThresholdSearchOptions {
  ComponentSpec inner{"cache", {}};    // the policy whose threshold is searched
  std::string key = "threshold";       // the inner option searched
  std::string target = "flops_speedup";  // flops_speedup | psnr
  double value = 2.0;                  // the speedup (x) or PSNR (dB) to reach
  double lo = 0.0, hi = 1.0;           // search interval of the threshold
  int grid = 6;                        // curve points in [lo, hi]
  int refine = 4;                      // bisection steps after the curve
  std::string file;                    // the result, written by `cachelab calibrate`
  template <class V>
  void fields(V& v) {
    v("inner", inner, "the threshold policy whose threshold is searched");
    v("key", key, "the inner policy's option that is searched");
    v("target", target, "flops_speedup | psnr (dB against the uncached samples of the calibration run)");
    v("value", value, "the FLOPs speedup or PSNR to reach");
    v("lo", lo, "lower end of the searched threshold interval");
    v("hi", hi, "upper end of the searched threshold interval");
    v("grid", grid, "thresholds evenly spaced in [lo, hi] that are run first (the reported curve)");
    v("refine", refine, "bisection runs between the curve points where the target is crossed");
    v("file", file, "the found threshold and the curve, written by `cachelab calibrate`");
  }
  template <class C>
  void check(C& c) const {
    c.require(!inner.empty(), "inner", "must name the searched policy, e.g. {type: magcache, ...}");
    c.require(!key.empty(), "key", "must name the searched option");
    c.one_of("target", target, {"flops_speedup", "psnr"});
    c.require(hi > lo, "hi", "must be > lo");
    c.require(grid >= 2 && grid <= 50, "grid", "must be in [2, 50]");
    c.require(refine >= 0 && refine <= 20, "refine", "must be in [0, 20]");
    c.require(!file.empty(), "file", "must name the result file (written by `cachelab calibrate`)");
  }
};

class ThresholdSearch final : public CachePolicy, public Calibrator, public MultiRunCalibrator {
 public:
  struct Point {
    double threshold, speedup, psnr;
  };
  ThresholdSearch(const ThresholdSearchOptions& o, const BuildContext& ctx);
  ~ThresholdSearch() override;
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  bool wants_tap(int tap) const override { return !reference_phase_ && inner_->wants_tap(tap); }
  void tap(int tap, const at::Tensor& value) override {
    if (!reference_phase_) inner_->tap(tap, value);
  }
  void end_step(const std::vector<uint8_t>& decisions) override {
    if (!reference_phase_) inner_->end_step(decisions);
  }
  Calibrator* calibrator() override { return this; }
  // An inner policy that is fitted itself (teacache's polynomial) is fitted first, with the
  // search held (the session fits a stack innermost first); the search then reads its file.
  void calibrators(std::vector<Calibrator*>& out) override {
    inner_->calibrators(out);
    out.push_back(this);
  }
  void hold(bool on) override { held_ = on; }
  void start_calibration() override;
  bool another_run(double flops, const at::Tensor& samples) override;
  std::string finish_calibration() override;
  std::string calibration_file() const override { return o_.file; }

  // The point kept from a curve (see the header comment); `reached` says whether it meets the target.
  static Point choose(const std::vector<Point>& curve, const std::string& target, double value, bool* reached);
  double threshold() const { return threshold_; }

 private:
  void use(double threshold);  // rebuilds the inner policy with this threshold
  ThresholdSearchOptions o_;
  BuildContext ctx_;
  RunOptions run_;  // ctx_.run points here (the builder's copy may not outlive this)
  std::unique_ptr<SiteLayer> inner_;
  std::string digest_;
  double threshold_ = 0;
  bool calibrating_ = false, loaded_ = false, reference_phase_ = false, held_ = false;
  double ref_flops_ = 0;
  at::Tensor ref_samples_;
  std::vector<Point> curve_;
  int runs_ = 0;
};

}  // namespace cachelab
