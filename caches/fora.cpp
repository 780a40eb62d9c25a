#include "caches/fora.h"

#include <ATen/ATen.h>

#include "framework/error.h"

namespace cachelab {

ForaPolicy::ForaPolicy(const ForaOptions& o) : o_(o) {
  CL_CHECK(o.interval >= 1, "fora: interval must be >= 1, got " << o.interval);
  CL_CHECK(o.warmup_steps >= 0, "fora: warmup_steps must be >= 0, got " << o.warmup_steps);
}

void ForaPolicy::begin_run(const std::vector<Site>& sites, int) {
  cached_site_.assign(sites.size(), false);
  cache_.assign(sites.size(), at::Tensor());
  int matched = 0;
  for (size_t i = 0; i < sites.size(); ++i) {
    const std::string& name = sites[i].name;
    if (name.rfind("blocks.", 0) != 0) continue;
    const auto dot = name.rfind('.');
    const std::string kind = name.substr(dot + 1);
    for (auto& l : o_.layers)
      if (kind == l && dot > 7) cached_site_[i] = true, ++matched;
  }
  CL_CHECK(matched > 0, "fora: no site of this backbone matches layers [" << o_.layers.size()
                                                                          << " kinds]; DiT sites are blocks.i.attn "
                                                                             "and blocks.i.mlp (layers: [attn, mlp])");
}

Decision ForaPolicy::decide(int site, const at::Tensor&, double* signal) {
  *signal = kNoSignal;
  if (!cached_site_[site] || !cache_[site].defined()) return Decision::Compute;
  if (step_ < o_.warmup_steps || (step_ - o_.warmup_steps) % o_.interval == 0) return Decision::Compute;
  return Decision::Reuse;
}

at::Tensor ForaPolicy::stand_in(int site, const at::Tensor&) { return cache_[site]; }

void ForaPolicy::observe(int site, const at::Tensor&, const at::Tensor& output) {
  if (cached_site_[site]) cache_[site] = output;
}

}  // namespace cachelab
