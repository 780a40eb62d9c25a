// Every cache policy, one line each.
#include "caches/fbcache.h"
#include "caches/fora.h"
#include "caches/kv_cache.h"
#include "caches/none.h"
#include "framework/registries.h"

namespace cachelab {

void register_caches() {
  auto& r = caches();
  r.add<NoCache, NoCacheOptions>("none", "compute every site at every step (the reference)", __FILE__);
  r.add<ForaPolicy, ForaOptions>("fora", "FORA: reuse attn/mlp outputs, recompute every N-th step", __FILE__);
  r.add<FbCachePolicy, FbCacheOptions>(
      "fbcache", "First-Block Cache: skip the middle blocks while the first block's residual barely changes", __FILE__);
  ops_layers().add<PrefixKvCache, PrefixKvOptions>(
      "prefix_kv", "Fast-dLLM block-wise prefix K/V cache for masked-diffusion LMs (mdlm)", __FILE__);
  ops_layers().add<RollingKvCache, RollingKvOptions>(
      "rolling_kv", "AR video: K/V of finished frames kept, attention over a window of past frames", __FILE__);
}

}  // namespace cachelab
