// DeepCache (Ma et al., 2024): a U-Net's deep features change slowly across denoising
// steps, so the deep branch below one skip connection is computed only at some steps
// (the "slow" steps) and its output reused at the others, where only the shallow path
// (the blocks above that skip, and the skip itself) is recomputed.
//
// The cached site is the backbone's Branch site whose block tag is `branch` (on the U-Net:
// branches.l, the deep part below skip level l; 0 = the shallowest skip, the most saved).
// Sites are chosen by kind and tag, so any backbone exposing Branch sites works.
//
// Schedules over the denoising steps s = 0..T-1 of each outer iteration (n = ceil(T/N)
// slow steps in both):
//   uniform:     s = 0, N, 2N, ...
//   non_uniform: the paper's centre-dense schedule. With c = round(center x T) and
//     u_k = -c^(1/p) + k (c^(1/p) + (T-c)^(1/p)) / n, k = 0..n, the slow steps are 0 and
//     c + trunc(sign(u_k) |u_k|^p) for the distinct values other than the smallest and
//     largest; p starts at `power` and is lowered by 0.02 until the count is n (at p = 1
//     the spacing is uniform around c, which always yields n). Our reading of DeepCache's
//     DDPM sampler, which writes the same map with a complex power of the negative part.
// The decision signal is the age of the reused deep features in steps (0 when computed).
#pragma once
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct DeepCacheOptions {
  int interval = 3;                   // N: the deep branch is computed ceil(T/N) times
  std::string schedule = "uniform";   // uniform | non_uniform
  int branch = 0;                     // block tag of the Branch site cached (skip level)
  double power = 1.4;                 // non_uniform: starting exponent p (> 1 = denser at the centre)
  double center = 0.5;                // non_uniform: centre of the dense region, fraction of the steps
  template <class V>
  void fields(V& v) {
    v("interval", interval, "N: the deep branch is computed at ceil(T/N) of the T steps, reused at the others");
    v("schedule", schedule, "uniform (every N-th step) or non_uniform (centre-dense, the paper's quadratic schedule)");
    v("branch", branch, "block tag of the Branch site to cache (U-Net: skip level; 0 = shallowest, fastest)");
    v("power", power, "non_uniform: starting exponent of the schedule (> 1: denser around the centre)");
    v("center", center, "non_uniform: centre of the dense region as a fraction of the steps");
  }
  template <class C>
  void check(C& c) const {
    c.require(interval >= 1, "interval", "must be >= 1");
    c.one_of("schedule", schedule, {"uniform", "non_uniform"});
    c.require(branch >= 0, "branch", "must be >= 0");
    c.require(power >= 1, "power", "must be >= 1");
    c.require(center >= 0 && center <= 1, "center", "must be in [0, 1]");
  }
};

// The slow steps (deep branch computed) among T steps, ascending; always contains 0.
std::vector<int> deepcache_slow_steps(int steps, int interval, const std::string& schedule, double power,
                                      double center);

class DeepCachePolicy final : public CachePolicy {
 public:
  explicit DeepCachePolicy(const DeepCacheOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  DeepCacheOptions o_;
  int site_ = -1;                 // the cached Branch site
  std::vector<char> slow_;        // per inner step: compute the deep branch
  int slow_for_count_ = -1;       // inner_count slow_ was built for
  bool slow_step_ = true;
  int inner_ = 0, last_computed_ = 0;
  at::Tensor cache_;              // the deep branch's last output
};

}  // namespace cachelab
