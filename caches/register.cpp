// Every cache policy, one line each.
#include "caches/fbcache.h"
#include "caches/fora.h"
#include "caches/l2c.h"
#include "caches/none.h"
#include "framework/registries.h"

namespace cachelab {

void register_caches() {
  auto& r = caches();
  r.add<NoCache, NoCacheOptions>("none", "compute every site at every step (the reference)", __FILE__);
  r.add<ForaPolicy, ForaOptions>("fora", "FORA: reuse attn/mlp outputs, recompute every N-th step", __FILE__);
  r.add<FbCachePolicy, FbCacheOptions>(
      "fbcache", "First-Block Cache: skip the middle blocks while the first block's residual barely changes", __FILE__);
  r.add<L2cRouter, L2cOptions>("l2c", "Learning-to-Cache: a trained router per (step, block, attn/mlp) picks the sub-layers to reuse", __FILE__);
}

}  // namespace cachelab
