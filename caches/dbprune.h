// DBPrune (cache-dit's Dynamic Block Prune): DBCache's decision made per block. Every block
// outside the first `front_blocks` (Fn) and the last `back_blocks` (Bn) compares its input
// with its input at the step it last ran:
//     signal = mean|x - x_prev| / mean|x_prev|.
// Below `threshold` (after the warm-up, within the cap on pruned steps) the block is pruned:
// its output is the input plus the residual (out - in) it had at that step. Otherwise it runs
// and its input and residual are stored. Unlike DBCache, a block pruned at one step does not
// force its neighbours, and a block can be pruned while one before it ran. Logged per block
// and step: the signal (/sites/signal) and the decision.
#pragma once
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct DbPruneOptions {
  double threshold = 0.05;       // residual_diff_threshold
  int warmup_steps = 8;          // steps always computed at the start
  int max_pruned_steps = -1;     // cap on steps where any block is pruned (-1 = no cap)
  int front_blocks = 1;          // Fn: first blocks never pruned
  int back_blocks = 1;           // Bn: last blocks never pruned
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "prune a block when the relative L1 change of its input since it last ran is below this");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
    v("max_pruned_steps", max_pruned_steps, "cap on steps with a pruned block (-1 = no cap)");
    v("front_blocks", front_blocks, "Fn: first blocks never pruned");
    v("back_blocks", back_blocks, "Bn: last blocks never pruned");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= 0, "threshold", "must be >= 0");
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
    c.require(max_pruned_steps >= -1, "max_pruned_steps", "must be >= 0, or -1 for no cap");
    c.require(front_blocks >= 0, "front_blocks", "must be >= 0");
    c.require(back_blocks >= 0, "back_blocks", "must be >= 0");
  }
};

class DbPrunePolicy final : public CachePolicy {
 public:
  explicit DbPrunePolicy(const DbPruneOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  DbPruneOptions o_;
  std::vector<int> block_of_;           // per site: main-stream block index, else -1
  std::vector<at::Tensor> in_, res_;    // per block: input and residual at the step it last ran
  int depth_ = 0, step_ = 0, pruned_steps_ = 0;
  bool pruned_this_step_ = false;
};

}  // namespace cachelab
