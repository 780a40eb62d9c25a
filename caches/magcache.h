// MagCache (Ma et al., 2025): skip the block stack (`body`) using a per-step table of
// magnitude ratios of its residual, fitted once per backbone and sampler length.
//
// The residual r_t = body out - body in shrinks or grows from step to step by a ratio that
// is nearly the same for every prompt; `cachelab calibrate` measures, per step t,
//     gamma_t = mean over tokens of ||r_t|| / ||r_{t-1}||      (gamma_0 = 1)
// and writes them to `calibration` with the backbone's digest. A run then, per step t
// after the first `retention_ratio` x T steps (always computed):
//     ratio *= gamma_t,  err += |1 - ratio|,  skipped += 1
//     err <= threshold and skipped <= K: reuse the last computed residual (r_t ~ ratio x r_k,
//         approximated by r_k as the paper does),
//     otherwise compute, and reset ratio = 1, err = 0, skipped = 0.
// The decision signal is the accumulated error. A run with a different step count reads
// the table by nearest-index resampling (as the reference code does).
#pragma once
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct MagCacheOptions {
  double threshold = 0.06;         // magcache_thresh: cap on the accumulated error
  int max_skip = 2;                // magcache_K: cap on consecutive skipped steps
  double retention_ratio = 0.2;    // fraction of the first steps always computed
  std::string calibration;         // per-step ratios fitted by `cachelab calibrate`
  std::vector<double> ratios;      // per-step ratios given inline (when `calibration` is "")
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "skip while the accumulated error, the sum of abs(1 - prod gamma), stays <= this");
    v("max_skip", max_skip, "K: at most this many consecutive skipped steps");
    v("retention_ratio", retention_ratio, "fraction of the first steps always computed");
    v("calibration", calibration, "file of per-step magnitude ratios written by `cachelab calibrate`");
    v("ratios", ratios, "per-step magnitude ratios given inline (used when calibration is empty)");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= 0, "threshold", "must be >= 0");
    c.require(max_skip >= 0, "max_skip", "must be >= 0");
    c.require(retention_ratio >= 0 && retention_ratio <= 1, "retention_ratio", "must be in [0, 1]");
    c.require(!calibration.empty() || !ratios.empty(), "calibration",
              "must name the ratio file (fitted by `cachelab calibrate`), or give `ratios` inline");
  }
};

// The site whose residual step-level policies cache: the main-stream `body`, else the
// whole model (-1 when neither exists).
int residual_site(const std::vector<Site>& sites);

// Ratios of `table` resampled to `steps` entries by nearest index (the reference code's
// nearest_interp): entry i reads table[round(i (n - 1) / (steps - 1))].
std::vector<double> resample_nearest(const std::vector<double>& table, int steps);

class MagCachePolicy final : public CachePolicy, public Calibrator {
 public:
  explicit MagCachePolicy(const MagCacheOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

  Calibrator* calibrator() override { return o_.calibration.empty() ? nullptr : this; }
  void start_calibration() override;
  std::string finish_calibration() override;
  std::string calibration_file() const override { return o_.calibration; }
  const std::vector<double>& ratios() const { return gamma_; }

 private:
  MagCacheOptions o_;
  std::string digest_;
  bool calibrating_ = false, loaded_ = false;
  std::vector<double> table_, gamma_;         // as fitted / resampled to this run's steps
  std::vector<double> fit_sum_;               // calibration: per step, sum of ratios
  std::vector<int> fit_n_;
  int site_ = -1, step_ = 0, inner_ = 0, inner_count_ = 0, steps_ = 0;
  double ratio_ = 1, err_ = 0;
  int skipped_ = 0;
  at::Tensor residual_;
};

}  // namespace cachelab
