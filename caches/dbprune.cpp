#include "caches/dbprune.h"

#include <ATen/ATen.h>

#include "framework/error.h"
#include "metrics/functional.h"

namespace cachelab {

void DbPrunePolicy::begin_run(RunContext& ctx) {
  depth_ = main_stream_blocks(*ctx.sites, block_of_);
  CL_CHECK(o_.front_blocks + o_.back_blocks < depth_,
           "dbprune: front_blocks (" << o_.front_blocks << ") + back_blocks (" << o_.back_blocks
                                     << ") leave no block to prune in a " << depth_ << "-block backbone");
  in_.assign(size_t(depth_), at::Tensor());
  res_.assign(size_t(depth_), at::Tensor());
  step_ = pruned_steps_ = 0;
}

void DbPrunePolicy::begin_step(const StepIndex& step) {
  if (pruned_this_step_) ++pruned_steps_;
  pruned_this_step_ = false;
  step_ = step.index;
}

Tensors DbPrunePolicy::at(SiteCall& call, const Next& next) {
  const int b = block_of_[size_t(call.site)];
  if (b < 0) return next(call);
  const at::Tensor& input = call.inputs[0];
  const bool prunable = b >= o_.front_blocks && b < depth_ - o_.back_blocks;
  if (prunable && in_[size_t(b)].defined()) {
    const double signal = rel_l1(input, in_[size_t(b)]);
    call.log->signal = signal;
    const bool capped = o_.max_pruned_steps >= 0 && pruned_steps_ >= o_.max_pruned_steps;
    if (step_ >= o_.warmup_steps && !capped && signal < o_.threshold) {
      pruned_this_step_ = true;
      call.log->decision = Decision::Reuse;
      return {input + res_[size_t(b)]};
    }
  }
  Tensors out = next(call);
  in_[size_t(b)] = input;
  res_[size_t(b)] = out[0] - input;
  return out;
}

}  // namespace cachelab
