// Temporal Delta Cache (6Bit-Diffusion, TDC): a transformer block whose residual
// r = out - in barely changes from one computed step to the next is skipped, and its
// output stands in as the current input plus the cached residual, out = in + r.
//
// Per block site (kind block; any stream) at a computed step s:
//     signal = mean|r_s - r_prev| / mean|r_prev|   (r_prev: residual at the block's last computation)
// The block is skipped at the following steps while signal < threshold, after the
// warm-up, at most `max_consecutive` steps in a row; then it is computed again, which
// refreshes r and the signal. A site whose output shape differs from its input's (a
// U-Net block that changes resolution) has no residual and is always computed.
// threshold 0 never skips (bit for bit the uncached run).
#pragma once
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct DeltaCacheOptions {
  double threshold = 0.05;   // skip while the residual's rel-L1 change is below this
  int warmup_steps = 3;      // steps always computed at the start
  int max_consecutive = 2;   // cap on consecutive skipped steps per block (-1 = no cap)
  int front_blocks = 0;      // first blocks of each stream always computed
  int back_blocks = 0;       // last blocks of each stream always computed
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "skip a block while the rel-L1 change of its residual (out - in) is below this");
    v("warmup_steps", warmup_steps, "steps always computed at the start");
    v("max_consecutive", max_consecutive, "cap on consecutive skipped steps per block (-1 = no cap)");
    v("front_blocks", front_blocks, "first blocks of each stream always computed");
    v("back_blocks", back_blocks, "last blocks of each stream always computed");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= 0, "threshold", "must be >= 0");
    c.require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
    c.require(max_consecutive >= -1, "max_consecutive", "must be >= 0, or -1 for no cap");
    c.require(front_blocks >= 0, "front_blocks", "must be >= 0");
    c.require(back_blocks >= 0, "back_blocks", "must be >= 0");
  }
};

class DeltaCachePolicy final : public CachePolicy {
 public:
  explicit DeltaCachePolicy(const DeltaCacheOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  // Steps count within an outer iteration; a new one (a chunk of a sequence pipeline)
  // starts with nothing cached.
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  struct State {
    at::Tensor residual;       // [B, N, D] out - in at the last computation
    double signal = kNoSignal; // rel-L1 change of the residual measured then
    int consecutive = 0;       // steps skipped since
  };
  DeltaCacheOptions o_;
  std::vector<bool> selected_;
  std::vector<State> state_;
  int step_ = 0, outer_ = 0;
};

}  // namespace cachelab
