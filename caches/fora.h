// FORA (Selvaraju et al., 2024): static caching of the attention and MLP sub-layer
// outputs of every block. Step s computes them when s % interval == 0 and reuses the
// last computed output otherwise.
#pragma once
#include <string>
#include <vector>

#include "caches/cache_policy.h"

namespace cachelab {

struct ForaOptions {
  int interval = 3;                              // N: compute every N-th step
  std::vector<std::string> layers = {"attn", "mlp"};  // sub-layer kinds cached in every block
  int warmup_steps = 0;                          // steps always computed at the start
  template <class V>
  void fields(V& v) {
    v("interval", interval, "compute the cached sub-layers every N-th step, reuse otherwise");
    v("layers", layers, "sub-layer kinds to cache in every block (attn, mlp)");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
  }
};

class ForaPolicy final : public CachePolicy {
 public:
  explicit ForaPolicy(const ForaOptions& o);
  void begin_run(const std::vector<Site>& sites, int steps) override;
  void begin_step(const StepInfo& step) override { step_ = step.index; }
  Decision decide(int site, const at::Tensor& input, double* signal) override;
  at::Tensor stand_in(int site, const at::Tensor& input) override;
  void observe(int site, const at::Tensor& input, const at::Tensor& output) override;

 private:
  ForaOptions o_;
  std::vector<bool> cached_site_;   // per site: is it a cached sub-layer
  std::vector<at::Tensor> cache_;   // per site: last computed output
  int step_ = 0;
};

}  // namespace cachelab
