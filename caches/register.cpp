// Every cache policy, one line each.
#include "caches/dec.h"
#include "caches/deepcache.h"
#include "caches/fbcache.h"
#include "caches/fora.h"
#include "caches/kv_cache.h"
#include "caches/l2c.h"
#include "caches/none.h"
#include "caches/taylorseer.h"
#include "caches/teacache.h"
#include "caches/toca.h"
#include "framework/registries.h"

namespace cachelab {

void register_caches() {
  auto& r = caches();
  r.add<NoCache, NoCacheOptions>("none", "compute every site at every step (the reference)", __FILE__);
  r.add<ForaPolicy, ForaOptions>("fora", "FORA: reuse attn/mlp outputs, recompute every N-th step", __FILE__);
  r.add<FbCachePolicy, FbCacheOptions>(
      "fbcache", "First-Block Cache: skip the middle blocks while the first block's residual barely changes", __FILE__);
  r.add<TaylorSeerPolicy, TaylorSeerOptions>(
      "taylorseer", "TaylorSeer: forecast sub-layer outputs from finite differences, compute every N-th step", __FILE__);
  r.add<TeaCachePolicy, TeaCacheOptions>(
      "teacache", "TeaCache: skip the body while block 0's accumulated modulated-input change is small", __FILE__);
  r.add<TocaPolicy, TocaOptions>("toca", "ToCa: recompute a scored fraction of tokens, full refresh every N", __FILE__);
  r.add<DeepCachePolicy, DeepCacheOptions>(
      "deepcache", "DeepCache: reuse a U-Net's deep branch below a skip, recompute the shallow path", __FILE__);
  r.add<DecCorrector, DecOptions>("dec", "DEC: per-channel affine correction of any policy's stand-ins", __FILE__);
  ops_layers().add<PrefixKvCache, PrefixKvOptions>(
      "prefix_kv", "Fast-dLLM block-wise prefix K/V cache for masked-diffusion LMs (mdlm)", __FILE__);
  ops_layers().add<RollingKvCache, RollingKvOptions>(
      "rolling_kv", "AR video: K/V of finished frames kept, attention over a window of past frames", __FILE__);
  r.add<L2cRouter, L2cOptions>("l2c", "Learning-to-Cache: a trained router per (step, block, attn/mlp) picks the sub-layers to reuse", __FILE__);
}

}  // namespace cachelab
