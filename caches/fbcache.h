// First-Block Cache (ParaAttention's FBCache): DBCache (caches/dbcache.h) with Fn = 1
// compute block in front, Bn = 0 behind, and ParaAttention's defaults.
#pragma once
#include "caches/dbcache.h"

namespace cachelab {

// The same keys as dbcache; only the defaults differ.
struct FbCacheOptions : DbCacheOptions {
  FbCacheOptions() {
    threshold = 0.1;
    warmup_steps = 2;
    max_consecutive = 3;
    max_cached_steps = -1;
    front_blocks = 1;
    back_blocks = 0;
  }
};

class FbCachePolicy final : public DbCachePolicy {
 public:
  explicit FbCachePolicy(const FbCacheOptions& o) : DbCachePolicy(o) {}
};

}  // namespace cachelab
