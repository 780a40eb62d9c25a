// DBCache (cache-dit's Dual Block Cache, generalising ParaAttention's First-Block Cache):
// the first `front_blocks` (Fn) blocks always run. Their residual r = out - in is compared
// with r at the last step where the middle blocks ran:
//     signal = mean|r - r_prev| / mean|r_prev|.
// When signal < threshold (after the warm-up, within the caps) the middle blocks are
// skipped and the cached middle residual (middle out - middle in, from the last computed
// step) is added to the current middle input; the last `back_blocks` (Bn) blocks always
// run, refining the approximated stream. `fbcache` is the preset Fn = 1, Bn = 0.
#pragma once
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct DbCacheOptions {
  double threshold = 0.08;       // residual_diff_threshold
  int warmup_steps = 8;          // max_warmup_steps: steps always computed at the start
  int max_consecutive = -1;      // max_continuous_cached_steps (-1 = no cap)
  int max_cached_steps = -1;     // cap on cached steps in a trajectory (-1 = no cap)
  int front_blocks = 2;          // Fn: blocks always computed before the decision
  int back_blocks = 2;           // Bn: blocks always computed at the end
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "reuse when the relative L1 change of the front residual is below this");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
    v("max_consecutive", max_consecutive, "cap on consecutive cached steps (-1 = no cap)");
    v("max_cached_steps", max_cached_steps, "cap on cached steps per trajectory (-1 = no cap)");
    v("front_blocks", front_blocks, "Fn: first blocks always computed; their residual is the signal");
    v("back_blocks", back_blocks, "Bn: last blocks always computed");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= 0, "threshold", "must be >= 0");
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
    c.require(max_consecutive >= -1, "max_consecutive", "must be >= 0, or -1 for no cap");
    c.require(max_cached_steps >= -1, "max_cached_steps", "must be >= 0, or -1 for no cap");
    c.require(front_blocks >= 1, "front_blocks", "must be >= 1 (the signal is the front blocks' residual)");
    c.require(back_blocks >= 0, "back_blocks", "must be >= 0");
  }
};

class DbCachePolicy : public CachePolicy {
 public:
  explicit DbCachePolicy(const DbCacheOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  DbCacheOptions o_;
  std::vector<int> block_of_;  // per site: block index of a main-stream block site, else -1
  int depth_ = 0, first_mid_ = 0, last_mid_ = 0;
  int step_ = 0, consecutive_ = 0, cached_total_ = 0;
  bool reuse_this_step_ = false;
  double signal_ = kNoSignal;
  at::Tensor front_in_, front_res_, front_res_prev_;  // front residual now / at last computed step
  at::Tensor mid_in_, mid_res_;                       // middle input now, cached middle residual
};

}  // namespace cachelab
