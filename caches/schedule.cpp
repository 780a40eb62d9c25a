#include "caches/schedule.h"

#include <ATen/ATen.h>

#include "framework/error.h"
#include "framework/paths.h"

namespace cachelab {

std::string CacheScheduleOptions::resolve(const std::string& path) { return resolve_path(path); }

CacheSchedulePolicy::CacheSchedulePolicy(const CacheScheduleOptions& o) : o_(o) {
  if (!o_.scheduler.empty()) {
    // Made on demand (an artefact of the experiment, framework/artefacts.h): read when a run starts.
    CL_CHECK(!o_.file.empty(), "schedule: a `scheduler` makes its schedule in an experiment with a `calibration:` map "
                               "(docs/experiments.md#calibration-files-made-on-demand)");
  } else if (!o_.file.empty()) {
    schedule_ = load_schedule(CacheScheduleOptions::resolve(o_.file));
  } else {
    schedule_.method = "inline";
    schedule_.steps = int(o_.compute.size());
    for (int x : o_.compute) schedule_.compute.push_back(uint8_t(x));
  }
}

void CacheSchedulePolicy::begin_run(RunContext& ctx) {
  if (schedule_.steps == 0) schedule_ = load_schedule(CacheScheduleOptions::resolve(o_.file));  // (a scheduler's)
  const auto& sites = *ctx.sites;
  const std::string src = o_.file.empty() ? std::string("the inline `compute`") : "schedule file " + o_.file;
  CL_CHECK(schedule_.steps == ctx.steps, "schedule: " << src << " is for " << schedule_.steps << " steps but this run has "
                                                      << ctx.steps << "; make one for this sampler");
  CL_CHECK(schedule_.backbone_digest.empty() || ctx.backbone_digest.empty() ||
               schedule_.backbone_digest == ctx.backbone_digest,
           "schedule: " << src << " was made from a profile of weights with digest " << schedule_.backbone_digest
                        << " but this backbone's weights have digest " << ctx.backbone_digest
                        << "; profile this backbone again (`cachelab profile`)");
  column_.assign(sites.size(), -1);
  cache_.assign(sites.size(), at::Tensor());
  int driven = 0;
  for (size_t i = 0; i < sites.size(); ++i)
    for (auto& l : o_.layers)
      if (sites[i].kind == site_kind_from_name(l)) column_[i] = driven++;
  CL_CHECK(driven > 0, "schedule: no site of this backbone has a kind in `layers`");
  CL_CHECK(schedule_.mask.empty() || int(schedule_.mask[0].size()) == driven,
           "schedule: " << src << " has a mask over " << schedule_.mask[0].size() << " sites but `layers` selects "
                        << driven << " sites of this backbone");
  CL_CHECK(schedule_.rates.empty() || int(schedule_.rates[0].size()) == driven,
           "schedule: " << src << " has rates for " << schedule_.rates[0].size() << " sites but `layers` selects "
                        << driven << " sites of this backbone");
  input_.assign(sites.size(), at::Tensor());
  if (!schedule_.rates.empty()) {
    for (size_t i = 0; i < sites.size(); ++i)
      CL_CHECK(column_[i] < 0 || sites[i].rows,
               "schedule: " << src << " gives token rates, but site `" << sites[i].name << "` does not accept a token "
                            << "subset; drive token sites only (layers: [attn, mlp])");
    fraction_extra_ = ctx.declare_site_extra("computed_token_fraction", "ratio",
                                             "fraction of the site's tokens computed at this step (schedule rates)");
  }
}

Tensors CacheSchedulePolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  const int col = column_[s];
  bool compute = col < 0 || !cache_[s].defined() || schedule_.compute[size_t(step_)];
  if (col >= 0 && !schedule_.mask.empty() && cache_[s].defined())
    compute = schedule_.mask[size_t(step_)][size_t(col)] != 0;
  if (compute && col >= 0 && !schedule_.rates.empty() && cache_[s].defined())
    return partial(call, next, schedule_.rates[size_t(step_)][size_t(col)]);
  if (!compute) {
    call.log->decision = Decision::Reuse;
    return {cache_[s]};
  }
  Tensors out = next(call);
  if (col >= 0) cache_[s] = out[0], input_[s] = call.inputs[0];
  return out;
}

Tensors CacheSchedulePolicy::partial(SiteCall& call, const Next& next, double rate) {
  const size_t s = size_t(call.site);
  const at::Tensor& x = call.inputs[0];
  const int64_t N = x.size(1);
  const int64_t n = std::min<int64_t>(N, int64_t(std::ceil(rate * double(N) - 1e-9)));
  if (n == 0) {
    call.log->decision = Decision::Reuse;
    call.log->set_extra(fraction_extra_, 0.0);
    return {cache_[s]};
  }
  if (n == N || !input_[s].defined() || input_[s].sizes() != x.sizes()) {
    Tensors out = next(call);
    cache_[s] = out[0], input_[s] = x;
    call.log->set_extra(fraction_extra_, 1.0);
    return out;
  }
  auto rows = std::get<0>(std::get<1>(at::topk(token_change(x, input_[s]), n)).sort());
  call.rows = rows;
  Tensors part = next(call);
  call.rows = at::Tensor();
  cache_[s] = cache_[s].index_copy(1, rows, part[0]);  // new tensors: outputs are never written in place
  input_[s] = input_[s].index_copy(1, rows, x.index_select(1, rows));
  call.log->set_extra(fraction_extra_, double(n) / double(N));
  return {cache_[s]};
}

}  // namespace cachelab
