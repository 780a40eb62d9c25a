#include "caches/toca.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"

namespace cachelab {

void TocaPolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  selected_.assign(sites.size(), false);
  state_.assign(sites.size(), State());
  int matched = 0;
  for (size_t i = 0; i < sites.size(); ++i)
    for (auto& l : o_.layers)
      if (sites[i].kind == site_kind_from_name(l)) {
        CL_CHECK(sites[i].rows, "toca: site `" << sites[i].name << "` does not accept a token subset");
        selected_[i] = true, ++matched;
      }
  CL_CHECK(matched > 0, "toca: no site of this backbone has a kind in `layers`");
  fraction_extra_ = ctx.declare_site_extra("computed_token_fraction", "ratio",
                                           "fraction of the site's tokens computed at this step (toca)");
}

Tensors TocaPolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  if (!selected_[s]) return next(call);
  State& st = state_[s];
  const at::Tensor& x = call.inputs[0];
  const int64_t N = x.size(1);
  const int64_t fresh = std::min<int64_t>(N, int64_t(std::ceil(o_.fresh_ratio * double(N))));
  const bool full = !st.out.defined() || st.out.sizes() != x.sizes() || step_ < o_.warmup_steps ||
                    (step_ - o_.warmup_steps) % o_.interval == 0 || fresh >= N;
  if (full) {
    Tensors out = next(call);
    st.out = out[0];
    st.in = x;
    st.computed = at::full({N}, double(step_), x.options().dtype(at::kFloat));
    call.log->set_extra(fraction_extra_, 1.0);
    return out;
  }
  if (fresh == 0) {
    call.log->decision = Decision::Reuse;
    call.log->set_extra(fraction_extra_, 0.0);
    return {st.out};
  }
  // Score per token over the batch: relative change of its input since its last computation,
  // weighted up by how long it has been cached.
  auto stale = (double(step_) - st.computed) * o_.staleness_weight + 1.0;
  auto rows = std::get<0>(std::get<1>(at::topk(token_change(x, st.in) * stale, fresh)).sort());
  call.rows = rows;
  Tensors part = next(call);
  call.rows = at::Tensor();
  st.out = st.out.index_copy(1, rows, part[0]);  // a new tensor: outputs are never written in place
  st.in = st.in.index_copy(1, rows, x.index_select(1, rows));
  st.computed = st.computed.index_fill(0, rows, double(step_));
  call.log->set_extra(fraction_extra_, double(fresh) / double(N));
  return {st.out};
}

}  // namespace cachelab
