// FORA (Selvaraju et al., 2024): static caching of the attention and MLP sub-layer
// outputs of every block. Step s computes them when (s - warmup) % interval == 0 and
// reuses the last computed output otherwise. Sites are selected by kind (attn, mlp,
// block), never by name.
#pragma once
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct ForaOptions {
  int interval = 3;                                   // N: compute every N-th step
  std::vector<std::string> layers = {"attn", "mlp"};  // site kinds cached in every block
  int warmup_steps = 0;                               // steps always computed at the start
  template <class V>
  void fields(V& v) {
    v("interval", interval, "compute the cached sub-layers every N-th step, reuse otherwise");
    v("layers", layers, "site kinds to cache in every block (attn, mlp, block)");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
  }
  template <class C>
  void check(C& c) const {
    c.require(interval >= 1, "interval", "must be >= 1");
    c.require(!layers.empty(), "layers", "must name at least one site kind");
    c.each_one_of("layers", layers, {"attn", "mlp", "block"});
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
  }
};

class ForaPolicy final : public CachePolicy {
 public:
  explicit ForaPolicy(const ForaOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override { step_ = step.index; }
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  ForaOptions o_;
  std::vector<bool> cached_site_;  // per site: is it a cached kind
  std::vector<at::Tensor> cache_;  // per site: last computed output
  int step_ = 0;
};

}  // namespace cachelab
