#include "caches/fora.h"

#include <ATen/ATen.h>

#include "framework/error.h"

namespace cachelab {

void ForaPolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  cached_site_.assign(sites.size(), false);
  cache_.assign(sites.size(), at::Tensor());
  int matched = 0;
  for (size_t i = 0; i < sites.size(); ++i)
    for (auto& l : o_.layers)
      if (sites[i].kind == site_kind_from_name(l)) cached_site_[i] = true, ++matched;
  CL_CHECK(matched > 0, "fora: no site of this backbone has a kind in `layers`; DiT sites have kinds block, attn "
                        "and mlp");
}

Tensors ForaPolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  const bool compute = !cached_site_[s] || !cache_[s].defined() || step_ < o_.warmup_steps ||
                       (step_ - o_.warmup_steps) % o_.interval == 0;
  if (!compute) {
    call.log->decision = Decision::Reuse;
    return {cache_[s]};
  }
  Tensors out = next(call);
  if (cached_site_[s]) cache_[s] = out[0];
  return out;
}

}  // namespace cachelab
