#include "caches/pab.h"

#include <ATen/ATen.h>

#include "framework/error.h"

namespace cachelab {

void PabPolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  groups_ = {{o_.spatial_range, o_.spatial_timesteps[0], o_.spatial_timesteps[1]},
             {o_.cross_range, o_.cross_timesteps[0], o_.cross_timesteps[1]},
             {o_.mlp_range, o_.mlp_timesteps[0], o_.mlp_timesteps[1]}};
  group_of_.assign(sites.size(), -1);
  cache_.assign(sites.size(), at::Tensor());
  computed_at_.assign(sites.size(), 0);
  int matched = 0;
  for (size_t i = 0; i < sites.size(); ++i) {
    const Site& s = sites[i];
    int g = -1;
    if (s.kind == SiteKind::Attn) g = s.stream == 0 ? 0 : 1;
    else if (s.kind == SiteKind::Mlp) g = 2;
    if (g >= 0 && groups_[size_t(g)].range > 1) group_of_[i] = g, ++matched;
  }
  CL_CHECK(matched > 0, "pab: no site is broadcast (no attention or MLP site of this backbone belongs to a group "
                        "whose range is above 1)");
  step_ = outer_ = 0;
}

void PabPolicy::begin_step(const StepIndex& step) {
  if (step.outer != outer_) cache_.assign(cache_.size(), at::Tensor()), outer_ = step.outer;
  step_ = step.inner, t_ = step.timestep;
}

Tensors PabPolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  const int g = group_of_[s];
  if (g < 0) return next(call);
  const Group& grp = groups_[size_t(g)];
  const bool in_window = t_ >= grp.low && t_ <= grp.high;
  const bool fresh = cache_[s].defined() && cache_[s].sizes() == call.inputs[0].sizes() &&
                     step_ - computed_at_[s] < grp.range;
  if (in_window && fresh) {
    call.log->decision = Decision::Reuse;
    return {cache_[s]};
  }
  Tensors out = next(call);
  cache_[s] = out[0];
  computed_at_[s] = step_;
  return out;
}

}  // namespace cachelab
