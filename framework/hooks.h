// Sites: a backbone names each computation `out = f(in)` it performs (model, body,
// blocks.i, blocks.i.attn, blocks.i.mlp ...) and routes it through SiteHooks::at.
// The runner's hooks ask the cache policy whether to compute, reuse or predict.
// Models know nothing about caches.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

namespace cachelab {

using SiteFn = std::function<at::Tensor(const at::Tensor&)>;

// One row of a backbone's site table. Sites nest: `parent` is the index of the
// enclosing site (-1 for the root). `flops_per_sample` is the analytic FLOP count
// (multiply-add = 2 FLOPs) of the site's own work *excluding* its child sites, for one
// sample of the batch, so that summing over the sites actually computed gives the FLOPs
// actually spent.
struct Site {
  std::string name;
  int parent = -1;
  double flops_per_sample = 0.0;
};

class SiteHooks {
 public:
  virtual ~SiteHooks() = default;
  // `site` indexes the backbone's site table; `input` is what the computation reads
  // (its residual stream), `compute` does the work. Returns the site's output.
  virtual at::Tensor at(int site, const at::Tensor& input, const SiteFn& compute) = 0;
};

// Computes everything: what training and bare sampling use.
class PassThroughHooks final : public SiteHooks {
 public:
  at::Tensor at(int, const at::Tensor& input, const SiteFn& compute) override { return compute(input); }
};

// Index of a site by name, or -1.
int find_site(const std::vector<Site>& sites, const std::string& name);

}  // namespace cachelab
