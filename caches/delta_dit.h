// Delta-DiT (Chen et al., 2024): Delta-Cache over a range of consecutive blocks. At a
// computed step the range's deviation Delta = range out - range in is stored; at a cached
// step the range is skipped and its output is the *current* input plus Delta (not the old
// output, so changes made upstream of the range still reach it). Which range depends on
// the stage of sampling: before the boundary step b (the outline stage) the rear blocks
// are cached and the front blocks run; from b on (the detail stage) the front blocks are
// cached and the rear ones run. The range is recomputed every `interval` steps, and at the
// first step of each stage (its Delta is not known yet).
//
// The decision signal, on the range's first block, is the stage (0 outline: rear range; 1 detail).
// Exact when the range is a translation: if range(x) = x + c then input + Delta = range(input).
#pragma once
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct DeltaDitOptions {
  int interval = 2;          // N: the cached range runs every N-th step
  int cached_blocks = 4;     // Nc: blocks in the cached range
  double boundary = 0.5;     // b: first step of the detail stage, as a fraction of the steps
  int warmup_steps = 1;      // steps always computed at the start
  template <class V>
  void fields(V& v) {
    v("interval", interval, "N: the cached block range runs every N-th step, its Delta is reused in between");
    v("cached_blocks", cached_blocks, "Nc: blocks in the cached range (the rear ones before b, the front ones after)");
    v("boundary", boundary, "b: first step of the detail stage (front blocks cached), as a fraction of the steps");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
  }
  template <class C>
  void check(C& c) const {
    c.require(interval >= 1, "interval", "must be >= 1");
    c.require(cached_blocks >= 1, "cached_blocks", "must be >= 1");
    c.require(boundary >= 0 && boundary <= 1, "boundary", "must be in [0, 1]");
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
  }
};

class DeltaDitPolicy final : public CachePolicy {
 public:
  explicit DeltaDitPolicy(const DeltaDitOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  // The cached range [first, last] (block indices) at step s of `steps`.
  std::pair<int, int> range_at(int s, int steps) const;

 private:
  DeltaDitOptions o_;
  std::vector<int> block_of_;  // per site: block index of a main-stream block site, else -1
  int depth_ = 0, step_ = 0, steps_ = 0, lo_ = 0, hi_ = 0, stage_ = -1, since_ = 0;
  bool skip_ = false;
  at::Tensor in_, delta_;
};

}  // namespace cachelab
