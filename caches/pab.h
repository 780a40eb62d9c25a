// Pyramid Attention Broadcast (Zhao et al., 2024): attention outputs change little in the
// middle of sampling (the first and last ~15% of steps vary most), and the less so the
// lower the frequency of what an attention mixes: spatial attention least stable, then
// temporal, cross-modal attention most. PAB therefore reuses ("broadcasts") each
// attention's output for a range of steps inside a timestep window, with a range per
// attention type growing in that order (a pyramid); outside the window it computes.
//
// Broadcast groups, chosen by site tags (never names):
//   spatial   attention sites of stream 0 (the image / video tokens' self-attention)
//   cross     attention sites of stream 1 (the second, condition stream of two-stream models)
//   mlp       MLP sites of any stream (PAB's optional MLP broadcast; off by default)
// A site is computed when the model timestep lies outside the group's [low, high] window,
// when nothing is cached, or when `range` steps have passed since its last computation;
// otherwise its last output stands in. range 1 turns a group off. No backbone here has a
// separate temporal-attention site (tiny_video's attention is one frame-causal
// spatio-temporal attention, tagged as spatial), so there is no temporal group.
#pragma once
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct PabOptions {
  int spatial_range = 2;                          // compute spatial attention every N-th step in the window
  std::vector<int> spatial_timesteps = {100, 800};  // [low, high] model timesteps where it broadcasts
  int cross_range = 6;
  std::vector<int> cross_timesteps = {100, 900};
  int mlp_range = 1;                              // 1 = MLPs always computed
  std::vector<int> mlp_timesteps = {100, 800};
  template <class V>
  void fields(V& v) {
    v("spatial_range", spatial_range, "stream-0 attention: compute every N-th step inside the window (1 = always)");
    v("spatial_timesteps", spatial_timesteps, "[low, high] model timesteps where spatial attention is broadcast");
    v("cross_range", cross_range, "stream-1 attention: compute every N-th step inside the window (1 = always)");
    v("cross_timesteps", cross_timesteps, "[low, high] model timesteps where stream-1 attention is broadcast");
    v("mlp_range", mlp_range, "MLPs: compute every N-th step inside the window (1 = always)");
    v("mlp_timesteps", mlp_timesteps, "[low, high] model timesteps where MLPs are broadcast");
  }
  template <class C>
  void check(C& c) const {
    c.require(spatial_range >= 1, "spatial_range", "must be >= 1");
    c.require(cross_range >= 1, "cross_range", "must be >= 1");
    c.require(mlp_range >= 1, "mlp_range", "must be >= 1");
    for (auto* w : {&spatial_timesteps, &cross_timesteps, &mlp_timesteps})
      c.require(w->size() == 2 && (*w)[0] <= (*w)[1],
                w == &spatial_timesteps ? "spatial_timesteps" : w == &cross_timesteps ? "cross_timesteps" : "mlp_timesteps",
                "must be [low, high] with low <= high");
  }
};

class PabPolicy final : public CachePolicy {
 public:
  explicit PabPolicy(const PabOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  // A new outer iteration (a chunk of a sequence pipeline) starts with nothing cached.
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  struct Group {
    int range = 1;
    int64_t low = 0, high = 0;
  };
  PabOptions o_;
  std::vector<int> group_of_;      // per site: index into groups_, -1 = not broadcast
  std::vector<Group> groups_;
  std::vector<at::Tensor> cache_;  // per site: last computed output
  std::vector<int> computed_at_;   // per site: step of that computation
  int step_ = 0, outer_ = 0;
  int64_t t_ = 0;
};

}  // namespace cachelab
