// ZEUS (Jiang et al., 2026): no feature cache at all. Inside an acceleration window of the
// sampling run, some steps skip the whole denoiser (the `model` site) and stand in a
// second-order prediction of its output from the last computed output y_k and its
// backward difference:
//     y(s) = y_k + (s - s_k) / (s_k - s_{k-1}) (y_k - y_{k-1})        (s = step index)
// Skipped steps follow a modular pattern: step s in [start, end) x T is skipped when
// (s - start_step) % denominator is in `modular` (the reference's default: of every 3
// steps, skip 2 and compute 1). In the interleaved mode (reuse_interp, the paper's) the
// skipped steps of one run alternate extrapolation and reuse of the previous step's
// output, so two extrapolations never follow each other; interp_all extrapolates every
// skipped step, reuse_all copies. Steps before start, after end, and until two outputs
// are known are computed.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct ZeusOptions {
  double start = 0.2;             // acceleration window start, fraction of the steps
  double end = 0.9;               // acceleration window end (exclusive), fraction of the steps
  int denominator = 3;            // period of the skip pattern
  std::vector<int> modular = {0, 1};  // residues (s - window start) % denominator that skip
  std::string mode = "reuse_interp";  // reuse_interp | interp_all | reuse_all
  template <class V>
  void fields(V& v) {
    v("start", start, "acceleration window start, as a fraction of the steps (earlier steps compute)");
    v("end", end, "acceleration window end, as a fraction of the steps (later steps compute)");
    v("denominator", denominator, "period of the skip pattern inside the window");
    v("modular", modular, "residues (step - window start) % denominator whose steps skip the denoiser");
    v("mode", mode, "reuse_interp (alternate extrapolation and reuse: never two extrapolations in a row) | "
                    "interp_all | reuse_all");
  }
  template <class C>
  void check(C& c) const {
    c.require(start >= 0 && start <= 1, "start", "must be in [0, 1]");
    c.require(end >= start && end <= 1, "end", "must be in [start, 1]");
    c.require(denominator >= 1, "denominator", "must be >= 1");
    bool ok = int(modular.size()) < std::max(denominator, 1);
    for (int m : modular) ok = ok && m >= 0 && m < denominator;
    c.require(ok, "modular", "must hold distinct residues in [0, denominator) and leave one step of each period computed");
    c.one_of("mode", mode, {"reuse_interp", "interp_all", "reuse_all"});
  }
};

class ZeusPolicy final : public CachePolicy {
 public:
  explicit ZeusPolicy(const ZeusOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  // Whether step s (of `steps`) skips the denoiser under the modular pattern.
  bool scheduled_skip(int s, int steps) const;

 private:
  ZeusOptions o_;
  int site_ = -1, step_ = 0, steps_ = 0;
  bool last_was_extrapolation_ = false;
  double s_k_ = 0, s_prev_ = 0;
  at::Tensor y_k_, y_prev_, last_out_;
};

}  // namespace cachelab
