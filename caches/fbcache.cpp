#include "caches/fbcache.h"

#include <ATen/ATen.h>

#include <string>

#include "framework/error.h"
#include "metrics/functional.h"

namespace cachelab {

FbCachePolicy::FbCachePolicy(const FbCacheOptions& o) : o_(o) {
  CL_CHECK(o.threshold >= 0, "fbcache: threshold must be >= 0, got " << o.threshold);
  CL_CHECK(o.front_blocks >= 1, "fbcache: front_blocks must be >= 1, got " << o.front_blocks);
  CL_CHECK(o.back_blocks >= 0, "fbcache: back_blocks must be >= 0, got " << o.back_blocks);
  CL_CHECK(o.warmup_steps >= 0, "fbcache: warmup_steps must be >= 0, got " << o.warmup_steps);
}

void FbCachePolicy::begin_run(const std::vector<Site>& sites, int) {
  block_of_.assign(sites.size(), -1);
  depth_ = 0;
  for (size_t i = 0; i < sites.size(); ++i) {
    const std::string& n = sites[i].name;
    if (n.rfind("blocks.", 0) == 0 && n.find('.', 7) == std::string::npos) {
      block_of_[i] = std::stoi(n.substr(7));
      depth_ = std::max(depth_, block_of_[i] + 1);
    }
  }
  first_mid_ = o_.front_blocks;
  last_mid_ = depth_ - 1 - o_.back_blocks;
  CL_CHECK(first_mid_ <= last_mid_, "fbcache: front_blocks (" << o_.front_blocks << ") + back_blocks ("
                                                              << o_.back_blocks << ") leave no block to cache in a "
                                                              << depth_ << "-block backbone");
  step_ = consecutive_ = cached_total_ = 0;
  front_in_ = front_res_ = front_res_prev_ = mid_in_ = mid_res_ = at::Tensor();
}

void FbCachePolicy::begin_step(const StepInfo& step) {
  step_ = step.index;
  reuse_this_step_ = false;
  signal_ = kNoSignal;
}

Decision FbCachePolicy::decide(int site, const at::Tensor& input, double* signal) {
  *signal = kNoSignal;
  const int b = block_of_[site];
  if (b < first_mid_ || b > last_mid_) return Decision::Compute;  // not a block, or a front/back block
  if (b == first_mid_) {
    // The decision point: the front residual is known now.
    if (front_res_prev_.defined()) {
      signal_ = rel_l1(front_res_, front_res_prev_);
    }
    *signal = signal_;
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
  return reuse_this_step_ ? Decision::Reuse : Decision::Compute;
}

at::Tensor FbCachePolicy::stand_in(int site, const at::Tensor& input) {
  // Skipped middle blocks pass the stream through; the last one adds the cached residual.
  return block_of_[site] == last_mid_ ? input + mid_res_ : input;
}

void FbCachePolicy::observe(int site, const at::Tensor& input, const at::Tensor& output) {
  const int b = block_of_[site];
  if (b == 0) front_in_ = input;
  if (b == first_mid_ - 1) front_res_ = output - front_in_;
  if (b == last_mid_) mid_res_ = output - mid_in_;
}

}  // namespace cachelab
