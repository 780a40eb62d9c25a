#include "caches/dbcache.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"
#include "metrics/functional.h"

namespace cachelab {

void DbCachePolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  depth_ = main_stream_blocks(sites, block_of_);
  first_mid_ = o_.front_blocks;
  last_mid_ = depth_ - 1 - o_.back_blocks;
  CL_CHECK(first_mid_ <= last_mid_, "dbcache: front_blocks (" << o_.front_blocks << ") + back_blocks ("
                                                              << o_.back_blocks << ") leave no block to cache in a "
                                                              << depth_ << "-block backbone");
  step_ = consecutive_ = cached_total_ = 0;
  front_in_ = front_res_ = front_res_prev_ = mid_in_ = mid_res_ = at::Tensor();
}

void DbCachePolicy::begin_step(const StepIndex& step) {
  step_ = step.index;
  reuse_this_step_ = false;
  signal_ = kNoSignal;
}

Tensors DbCachePolicy::at(SiteCall& call, const Next& next) {
  const int b = block_of_[size_t(call.site)];
  const at::Tensor& input = call.inputs[0];
  if (b >= first_mid_ && b <= last_mid_) {
    if (b == first_mid_) {
      // The decision point: the front residual is known now.
      if (front_res_prev_.defined()) signal_ = rel_l1(front_res_, front_res_prev_);
      call.log->signal = signal_;
      const bool capped = (o_.max_consecutive >= 0 && consecutive_ >= o_.max_consecutive) ||
                          (o_.max_cached_steps >= 0 && cached_total_ >= o_.max_cached_steps);
      reuse_this_step_ = step_ >= o_.warmup_steps && mid_res_.defined() && !std::isnan(signal_) &&
                         signal_ < o_.threshold && !capped;
      if (reuse_this_step_) {
        ++consecutive_;
        ++cached_total_;
      } else {
        consecutive_ = 0;
        front_res_prev_ = front_res_;
        mid_in_ = input;
      }
    }
    if (reuse_this_step_) {
      // Skipped middle blocks pass the stream through; the last one adds the cached residual.
      call.log->decision = Decision::Reuse;
      return {b == last_mid_ ? input + mid_res_ : input};
    }
  }
  Tensors out = next(call);
  if (b == 0) front_in_ = input;
  if (b >= 0 && b == first_mid_ - 1) front_res_ = out[0] - front_in_;
  if (b >= 0 && b == last_mid_) mid_res_ = out[0] - mid_in_;
  return out;
}

}  // namespace cachelab
