#include "caches/deepcache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "framework/error.h"

namespace cachelab {

namespace {

// One try of the centre-dense map at exponent p: the candidate slow steps.
std::vector<int> centre_dense(int steps, int n, double c, double p) {
  const double lo = -std::pow(c, 1 / p), hi = std::pow(steps - c, 1 / p);
  std::set<long> offsets;
  for (int k = 0; k <= n; ++k) {
    const double u = lo + (hi - lo) * k / n;
    offsets.insert(long(std::trunc((u < 0 ? -1 : 1) * std::pow(std::abs(u), p))));
  }
  std::vector<int> out = {0};
  if (offsets.size() < 2) return out;
  auto first = std::next(offsets.begin()), last = std::prev(offsets.end());
  for (auto it = first; it != last; ++it) out.push_back(int(c) + int(*it));
  return out;
}

}  // namespace

std::vector<int> deepcache_slow_steps(int steps, int interval, const std::string& schedule, double power,
                                      double center) {
  CL_CHECK(steps >= 1 && interval >= 1, "deepcache: needs steps >= 1 and interval >= 1");
  const int n = (steps + interval - 1) / interval;
  std::vector<int> out;
  if (schedule == "uniform" || n >= steps) {
    for (int s = 0; s < steps; s += interval) out.push_back(s);
    return out;
  }
  CL_CHECK(schedule == "non_uniform", "deepcache: unknown schedule `" << schedule << "`");
  const double c = std::round(center * steps);
  // Lower p until the map yields exactly n distinct slow steps in [0, steps); p = 1 is the
  // last try (evenly spaced around c: n intervals of steps/n >= 1 never collide).
  for (double p = power;; p = std::max(1.0, p - 0.02)) {
    auto cand = centre_dense(steps, n, c, p);
    std::sort(cand.begin(), cand.end());
    cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
    const bool in_range = cand.front() == 0 && cand.back() < steps;
    if (int(cand.size()) == n && in_range) return cand;
    CL_CHECK(p > 1.0, "deepcache: no non-uniform schedule of " << n << " slow steps in " << steps << " steps");
  }
}

void DeepCachePolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  site_ = -1;
  std::string have;
  for (size_t i = 0; i < sites.size(); ++i)
    if (sites[i].kind == SiteKind::Branch && sites[i].stream == 0) {
      have += (have.empty() ? "" : ", ") + std::to_string(sites[i].block);
      if (sites[i].block == o_.branch) site_ = int(i);
    }
  CL_CHECK(!have.empty(), "deepcache: this backbone has no Branch site (a U-Net's deep branch below a skip "
                          "connection); use backbone `unet`");
  CL_CHECK(site_ >= 0, "deepcache: no Branch site with block " << o_.branch << "; this backbone has branch "
                                                                << have);
  slow_.clear();
  slow_for_count_ = -1;
  cache_ = at::Tensor();
  last_computed_ = 0;
}

void DeepCachePolicy::begin_step(const StepIndex& step) {
  const int count = std::max(step.inner_count, 1);
  if (count != slow_for_count_) {
    slow_.assign(size_t(count), 0);
    for (int s : deepcache_slow_steps(count, o_.interval, o_.schedule, o_.power, o_.center)) slow_[size_t(s)] = 1;
    slow_for_count_ = count;
  }
  inner_ = step.inner;
  slow_step_ = inner_ < 0 || inner_ >= count || slow_[size_t(inner_)];
  if (inner_ == 0) cache_ = at::Tensor();  // a new outer iteration (chunk, block) starts afresh
}

Tensors DeepCachePolicy::at(SiteCall& call, const Next& next) {
  if (call.site != site_) return next(call);
  const auto& x = call.inputs[0];
  const bool usable = cache_.defined() && cache_.size(0) == x.size(0) && !call.rows.defined();
  if (slow_step_ || !usable) {
    Tensors out = next(call);
    cache_ = out[0];
    last_computed_ = inner_;
    call.log->signal = 0.0;
    return out;
  }
  call.log->decision = Decision::Reuse;
  call.log->signal = double(inner_ - last_computed_);
  return {cache_};
}

}  // namespace cachelab
