// ToCa, token-wise feature caching (Zou et al., 2025): between full refreshes every
// `interval` steps, recompute only a `fresh_ratio` of each cached site's tokens, chosen by
// a score, and keep the cached outputs of the rest. FLOPs count the computed fraction.
//
// Score of token j (higher = recomputed first):
//   change_j x (1 + staleness_weight x steps since j was last computed),
//   change_j = |x_j - x_j at its last computation| / |x_j at its last computation|
// on the site's input (the residual stream). ToCa's attention-map scores need the
// attention probabilities, which a site does not expose; this score keeps its two other
// ingredients: how much a token moved and its cache frequency.
// fresh_ratio 1 recomputes every token (bit for bit the uncached run).
#pragma once
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct TocaOptions {
  int interval = 3;                                   // N: full refresh every N-th step
  double fresh_ratio = 0.25;                          // tokens recomputed in between
  std::vector<std::string> layers = {"attn", "mlp"};  // site kinds cached token-wise (must accept rows)
  double staleness_weight = 0.5;                      // weight of the cache frequency in the score
  int warmup_steps = 1;                               // steps always computed at the start
  template <class V>
  void fields(V& v) {
    v("interval", interval, "full refresh every N-th step");
    v("fresh_ratio", fresh_ratio, "fraction of tokens recomputed at the steps in between");
    v("layers", layers, "site kinds cached token-wise (attn, mlp)");
    v("staleness_weight", staleness_weight, "weight of steps-since-computed in the token score");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
  }
  template <class C>
  void check(C& c) const {
    c.require(interval >= 1, "interval", "must be >= 1");
    c.require(fresh_ratio >= 0 && fresh_ratio <= 1, "fresh_ratio", "must be in [0, 1]");
    c.require(!layers.empty(), "layers", "must name at least one site kind");
    c.each_one_of("layers", layers, {"attn", "mlp"});
    c.require(staleness_weight >= 0, "staleness_weight", "must be >= 0");
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
  }
};

class TocaPolicy final : public CachePolicy {
 public:
  explicit TocaPolicy(const TocaOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override { step_ = step.index; }
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  struct State {
    at::Tensor out;       // [B, N, D] cached output
    at::Tensor in;        // [B, N, D] input at each token's last computation
    at::Tensor computed;  // [N] float: step each token was last computed
  };
  TocaOptions o_;
  std::vector<bool> selected_;
  std::vector<State> state_;
  int step_ = 0, fraction_extra_ = -1;
};

}  // namespace cachelab
