// A static cache schedule as data: the cached sites (selected by kind, as FORA) compute
// at the steps a schedule marks and reuse their last computed output at the others. The
// schedule comes from a file (`cachelab schedule` writes them from a profile: CacheQuant's
// dynamic programme, uniform spacing, ERTACache-style profiling) or inline. A file may
// also hold a per-step x per-site mask (BAC) or per-step x per-site token rates
// (DiffSparse): at a rate r in (0, 1) the site recomputes the ceil(r N) of its N tokens
// whose input changed most since they were last computed and reuses the others.
#pragma once
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/layer.h"
#include "framework/schedule.h"

namespace cachelab {

struct CacheScheduleOptions {
  std::string file;                                   // a schedule file (framework/schedule.h)
  std::vector<int> compute;                           // or inline: per step 1 = compute, 0 = reuse
  ComponentSpec scheduler{"scheduler", {}};           // or made on demand from a profile
  int profile_samples = 4, profile_lags = 3;          // the profile a scheduler reads
  std::vector<double> profile_rates;
  std::vector<std::string> layers = {"attn", "mlp"};  // site kinds the schedule drives
  template <class V>
  void fields(V& v) {
    v("file", file, "schedule file written by `cachelab schedule` (exclusive with compute and scheduler)");
    v("compute", compute, "inline per-step schedule: 1 = compute, 0 = reuse (exclusive with file and scheduler)");
    // Keys added with the schedulers: left out of resolved configs without a scheduler (config.h).
    v("scheduler", scheduler,
      "a schedule maker ({type: dp, computes: 17}, uniform, profiled, bac, diffsparse): `cachelab run` profiles the "
      "reference on the experiment's calibration seed and makes the schedule when a run first needs it",
      ComponentSpec{"scheduler", {}});
    auto profile_key = [&](const char* key, auto& value, const char* doc) {
      if (scheduler.empty()) v(key, value, doc, value);  // (unused: never written)
      else v(key, value, doc);
    };
    profile_key("profile_samples", profile_samples, "with scheduler: samples the profile measures");
    profile_key("profile_lags", profile_lags, "with scheduler: the profile's reuse errors for lags 0..N steps");
    profile_key("profile_rates", profile_rates, "with scheduler: token rates of the profile's partial-reuse errors (diffsparse)");
    v("layers", layers, "site kinds the schedule drives (attn, mlp, block, branch)");
  }
  template <class C>
  void check(C& c) const {
    // With a scheduler, `file` is where the experiment stores what it makes (it may not exist yet).
    c.require(scheduler.empty() ? file.empty() != compute.empty() : compute.empty(), "file",
              "give exactly one of `file`, `compute` and `scheduler`");
    c.require(profile_samples >= 1, "profile_samples", "must be >= 1");
    c.require(profile_lags >= 0 && profile_lags <= 50, "profile_lags", "must be in 0..50");
    for (double r : profile_rates) c.require(r > 0 && r < 1, "profile_rates", "every rate must be in (0, 1)");
    for (int x : compute) c.require(x == 0 || x == 1, "compute", "every entry must be 0 or 1");
    c.require(!layers.empty(), "layers", "must name at least one site kind");
    c.each_one_of("layers", layers, {"attn", "mlp", "block", "branch", "body"});
    if (!file.empty() && scheduler.empty()) {
      std::string why;
      try {
        load_schedule(resolve(file));
      } catch (const std::exception& e) {
        why = e.what();
      }
      c.require(why.empty(), "file", why);
    }
  }
  static std::string resolve(const std::string& path);
};

class CacheSchedulePolicy final : public CachePolicy {
 public:
  explicit CacheSchedulePolicy(const CacheScheduleOptions& o);
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override { step_ = step.index; }
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  Tensors partial(SiteCall& call, const Next& next, double rate);
  CacheScheduleOptions o_;
  Schedule schedule_;
  std::vector<int> column_;        // per site: its column in the schedule's mask, -1 = not driven
  std::vector<at::Tensor> cache_;  // per site: last computed output
  std::vector<at::Tensor> input_;  // per site: its input at each token's last computation (rates)
  int step_ = 0, fraction_extra_ = -1;
};

}  // namespace cachelab
