// First-Block Cache (ParaAttention's FBCache): DBCache (caches/dbcache.h) with Fn = 1
// compute block in front, Bn = 0 behind, and ParaAttention's defaults.
#pragma once
#include "caches/dbcache.h"

namespace cachelab {

struct FbCacheOptions {
  double threshold = 0.1;        // residual_diff_threshold
  int warmup_steps = 2;          // steps always computed at the start
  int max_consecutive = 3;       // cap on consecutive cached steps (-1 = no cap)
  int max_cached_steps = -1;     // cap on cached steps in a trajectory (-1 = no cap)
  int front_blocks = 1;          // Fn: blocks always computed before the decision
  int back_blocks = 0;           // Bn: blocks always computed at the end
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
  DbCacheOptions as_dbcache() const {
    DbCacheOptions d;
    d.threshold = threshold, d.warmup_steps = warmup_steps, d.max_consecutive = max_consecutive;
    d.max_cached_steps = max_cached_steps, d.front_blocks = front_blocks, d.back_blocks = back_blocks;
    return d;
  }
};

class FbCachePolicy final : public DbCachePolicy {
 public:
  explicit FbCachePolicy(const FbCacheOptions& o) : DbCachePolicy(o.as_dbcache()) {}
};

}  // namespace cachelab
