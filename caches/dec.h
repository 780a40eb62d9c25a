// DEC, CacheQuant's decoupled error correction (Liu et al., 2025), as a corrector around
// any cache policy: where the inner policy answers with a stand-in (reuse or predict),
// the stand-in x is corrected per channel, y = a x + b, with (a, b) fitted per (step,
// site) by least squares between stand-ins and the true outputs (a = cov(x, y) / var(x),
// b = mean(y) - a mean(x), over every token of the calibration samples). `per: tensor`
// fits one scalar pair per (step, site) instead (`residual_linear`, below).
//
//   cache: {type: dec, inner: {type: fora, interval: 3}, table: results/calib/dec-fora3.safetensors}
//
// `cachelab calibrate EXP.yaml` runs each such variant once with the corrector observing:
// at every stand-in it also computes the true output (and passes the truth on, so the
// calibration follows the uncached trajectory), accumulates the sums, then writes `table`.
// With `trajectory: cached` it passes the stand-in on instead, so the fit sees the states
// the cached run really reaches.
#pragma once
#include <map>
#include <string>
#include <utility>

#include "framework/affine_fit.h"
#include "framework/layer.h"
#include "framework/registry.h"

namespace cachelab {

struct DecOptions {
  ComponentSpec inner{"cache", {}};  // the corrected policy
  std::string table;                 // the fitted coefficients (safetensors), relative to the project root
  bool apply = true;                 // false: run the inner policy uncorrected (an ablation)
  std::string per = "channel";       // channel: (a, b) per channel; tensor: one (a, b) per step and site
  std::string trajectory = "uncached";  // calibration follows the uncached or the variant's own cached trajectory
  template <class V>
  void fields(V& v) {
    v("inner", inner, "the cache policy whose stand-ins are corrected");
    v("table", table, "file of fitted (a, b) per step and site, written by `cachelab calibrate`");
    v("apply", apply, "apply the correction (false = the inner policy alone)");
    v("per", per, "`channel`: an (a, b) per channel (DEC); `tensor`: one scalar pair per step and site "
                  "(ERTACache's residual linearization)");
    v("trajectory", trajectory, "calibration follows the `uncached` trajectory (stand-ins replaced by the truth) or "
                                "the variant's own `cached` one (stand-ins kept, corrections inside applied)");
  }
  template <class C>
  void check(C& c) const {
    c.one_of("per", per, {"channel", "tensor"});
    c.one_of("trajectory", trajectory, {"uncached", "cached"});
    c.require(!inner.empty(), "inner", "must name the corrected policy, e.g. {type: fora, interval: 3}");
    c.require(!table.empty(), "table", "must name the coefficient file (written by `cachelab calibrate`)");
  }
};

// ERTACache's closed-form residual linearization (Ma et al., 2025), our reading: the cache
// error of a stand-in x is modelled as linear in x, y - x ~ alpha x + beta with one scalar
// pair per (step, site) in closed form (least squares), i.e. DEC with `per: tensor`.
struct ResidualLinearOptions : DecOptions {
  ResidualLinearOptions() { per = "tensor"; }
};

class DecCorrector : public Corrector {
 public:
  DecCorrector(const DecOptions& o, const BuildContext& ctx);
  ~DecCorrector() override;
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  void start_calibration() override;
  std::string finish_calibration() override;
  std::string calibration_file() const override { return o_.table; }

 private:
  using Key = std::pair<int, int>;  // (step, site)
  void load_table();
  at::Tensor rows(const at::Tensor& x) const;                               // [R, C] (C = 1 per tensor)
  at::Tensor per_channel(const at::Tensor& v, const at::Tensor& x) const;  // v [C] shaped to broadcast on x
  DecOptions o_;
  bool calibrating_ = false, loaded_ = false;
  std::map<Key, std::pair<at::Tensor, at::Tensor>> table_;
  std::map<Key, AffineSums> sums_;
  int step_ = 0, extra_ = -1;
  std::vector<std::string> site_names_;
  std::string digest_;  // the backbone's, written with the table and checked on load
};

}  // namespace cachelab
