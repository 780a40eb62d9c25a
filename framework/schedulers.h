// Schedule makers as components: each builds a cache schedule (framework/schedule.h) from a
// profile (framework/profile.h). `cachelab schedule PROFILE.h5 --method dp --computes 17`
// builds one from its flags; registered in caches/register.cpp. Torch-free.
//
//   {type: dp, computes: 17}                  CacheQuant's dynamic programme over the steps
//   {type: uniform, computes: 17}             evenly spaced
//   {type: profiled, computes: 17}            ERTACache-style greedy threshold on the distance
//   {type: bac, computes: 17}                 per-site DP + Bubbling Union (a per-site mask)
//   {type: diffsparse, computes: 17}          per-step x per-site token rates (needs a profile
//                                             measured with rates)
#pragma once
#include <string>
#include <vector>

#include "framework/profile.h"
#include "framework/schedule.h"

namespace cachelab {

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // The schedule for `p` (read from `profile_file`, recorded in the schedule); `summary`
  // gets a line for the user (what was built, its objective).
  virtual Schedule make(const Profile& p, const std::string& profile_file, std::string* summary) const = 0;
};

// What every maker takes: the budget and the sites whose reuse error it weighs.
struct SiteSchedulerOptions {
  int computes = 0;                                  // K: steps (per site, on average) that compute
  std::vector<std::string> kinds = {"attn", "mlp"};  // site kinds whose reuse error is summed
  template <class V>
  void fields(V& v) {
    v("computes", computes, "K: steps that compute (the budget; per site on average for bac and diffsparse)");
    v("kinds", kinds, "site kinds whose reuse error is weighed (attn, mlp, block, ...)");
  }
  template <class C>
  void check(C& c) const {
    c.require(computes >= 1, "computes", "must be >= 1 (the steps that compute)");
    c.require(!kinds.empty(), "kinds", "must name at least one site kind");
  }
};

// Makers of one schedule for every driven site (dp, uniform, profiled): which distance.
struct SchedulerOptions : SiteSchedulerOptions {
  std::string cost = "feature";  // feature | output
  template <class V>
  void fields(V& v) {
    SiteSchedulerOptions::fields(v);
    v("cost", cost,
      "feature: the sites' output distance between two steps | output: the model-output reuse error (within the "
      "profile's lags)");
  }
  template <class C>
  void check(C& c) const {
    SiteSchedulerOptions::check(c);
    c.one_of("cost", cost, {"feature", "output"});
  }
};

struct DpSchedulerOptions : SchedulerOptions {
  int min_len = 1, max_len = 0;
  template <class V>
  void fields(V& v) {
    SchedulerOptions::fields(v);
    v("min_len", min_len, "shortest run of steps sharing one computation");
    v("max_len", max_len, "longest run (0: no bound for cost feature, the profile's lags + 1 for output)");
  }
  template <class C>
  void check(C& c) const {
    SchedulerOptions::check(c);
    c.require(min_len >= 1, "min_len", "must be >= 1");
    c.require(max_len >= 0, "max_len", "must be >= 0 (0: the default bound)");
  }
};

struct BacSchedulerOptions : SiteSchedulerOptions {
  double union_quantile = 0.5;
  template <class V>
  void fields(V& v) {
    SiteSchedulerOptions::fields(v);
    v("union_quantile", union_quantile,
      "an upstream site also updates with a downstream FFN when its caching error exceeds this quantile of its own "
      "(1 = no union)");
  }
  template <class C>
  void check(C& c) const {
    SiteSchedulerOptions::check(c);
    c.require(union_quantile >= 0 && union_quantile <= 1, "union_quantile", "must be in [0, 1]");
  }
};

class DpScheduler final : public Scheduler {
 public:
  explicit DpScheduler(const DpSchedulerOptions& o) : o_(o) {}
  Schedule make(const Profile& p, const std::string& profile_file, std::string* summary) const override;

 private:
  DpSchedulerOptions o_;
};

// uniform (evenly spaced) and profiled (the least threshold on the distance to the last
// computed step that computes at most K steps): the same options, another rule.
template <bool kProfiled>
class StepScheduler final : public Scheduler {
 public:
  explicit StepScheduler(const SchedulerOptions& o) : o_(o) {}
  Schedule make(const Profile& p, const std::string& profile_file, std::string* summary) const override;

 private:
  SchedulerOptions o_;
};
using UniformScheduler = StepScheduler<false>;
using ProfiledScheduler = StepScheduler<true>;

class BacScheduler final : public Scheduler {
 public:
  explicit BacScheduler(const BacSchedulerOptions& o) : o_(o) {}
  Schedule make(const Profile& p, const std::string& profile_file, std::string* summary) const override;

 private:
  BacSchedulerOptions o_;
};

class DiffsparseScheduler final : public Scheduler {
 public:
  explicit DiffsparseScheduler(const SiteSchedulerOptions& o) : o_(o) {}
  Schedule make(const Profile& p, const std::string& profile_file, std::string* summary) const override;

 private:
  SiteSchedulerOptions o_;
};

// dist[j][u]: the error of reusing step j's features at step u > j, from the profile
// (averaged over the sites of `kinds`; infinite where not measured).
std::vector<std::vector<double>> reuse_distance(const Profile& p, const std::vector<std::string>& kinds,
                                                const std::string& cost);

}  // namespace cachelab
