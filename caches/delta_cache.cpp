#include "caches/delta_cache.h"

#include <ATen/ATen.h>

#include <cmath>
#include <map>

#include "framework/error.h"
#include "metrics/functional.h"

namespace cachelab {

void DeltaCachePolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  selected_.assign(sites.size(), false);
  state_.assign(sites.size(), State());
  std::map<int, int> depth;  // per stream: number of blocks
  for (auto& s : sites)
    if (s.kind == SiteKind::Block) depth[s.stream] = std::max(depth[s.stream], s.block + 1);
  int matched = 0;
  for (size_t i = 0; i < sites.size(); ++i) {
    const Site& s = sites[i];
    if (s.kind != SiteKind::Block) continue;
    const int d = depth[s.stream];
    if (s.block >= o_.front_blocks && s.block < d - o_.back_blocks) selected_[i] = true, ++matched;
  }
  CL_CHECK(matched > 0, "delta_cache: no block site left to cache (this backbone has no site of kind block, or "
                        "front_blocks + back_blocks cover them all)");
  step_ = outer_ = 0;
}

void DeltaCachePolicy::begin_step(const StepIndex& step) {
  if (step.outer != outer_) state_.assign(state_.size(), State()), outer_ = step.outer;
  step_ = step.inner;
}

Tensors DeltaCachePolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  if (!selected_[s]) return next(call);
  State& st = state_[s];
  const at::Tensor& in = call.inputs[0];
  const bool capped = o_.max_consecutive >= 0 && st.consecutive >= o_.max_consecutive;
  const bool stable = st.residual.defined() && st.residual.sizes() == in.sizes() && !std::isnan(st.signal) &&
                      st.signal < o_.threshold;
  call.log->signal = st.signal;
  if (step_ >= o_.warmup_steps && stable && !capped) {
    ++st.consecutive;
    call.log->decision = Decision::Reuse;
    return {in + st.residual};
  }
  Tensors out = next(call);
  st.consecutive = 0;
  if (out[0].sizes() != in.sizes()) {  // no residual: this block changes the shape
    st.residual = at::Tensor();
    return out;
  }
  at::Tensor r = out[0] - in;
  st.signal = st.residual.defined() && st.residual.sizes() == r.sizes() ? rel_l1(r, st.residual) : kNoSignal;
  st.residual = r;
  return out;
}

}  // namespace cachelab
