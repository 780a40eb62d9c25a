#include "framework/schedulers.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>

#include "framework/error.h"

namespace cachelab {

namespace {

std::string fmt(const char* f, double a, double b = 0, double c = 0, double d = 0) {
  char buf[512];
  std::snprintf(buf, sizeof buf, f, a, b, c, d);
  return buf;
}

void check_budget(const Profile& p, int computes) {
  CL_CHECK(computes >= 1 && computes <= p.steps(),
           "scheduler: computes " << computes << ": give 1.." << p.steps() << " (the profile has " << p.steps() << " steps)");
}

// The profile's columns of the sites of `kinds`.
std::vector<size_t> columns(const Profile& p, const std::vector<std::string>& kinds) {
  std::vector<size_t> cols;
  for (size_t s = 0; s < p.site_kinds.size(); ++s)
    if (std::find(kinds.begin(), kinds.end(), p.site_kinds[s]) != kinds.end()) cols.push_back(s);
  CL_CHECK(!cols.empty(), "scheduler: the profile has no site of kind " << kinds[0] << " (it has "
                                                                        << (p.site_kinds.empty() ? "none" : p.site_kinds[0])
                                                                        << ", ...); see `kinds`");
  return cols;
}

Schedule from_starts(const Profile& p, const std::string& method, const std::string& file, const std::vector<int>& starts) {
  Schedule s;
  s.method = method;
  s.steps = p.steps();
  s.backbone_digest = p.backbone_digest;
  s.profile = file;
  s.compute = compute_from_starts(s.steps, starts);
  return s;
}

std::string starts_text(const Schedule& s, const std::string& method, double objective, double uniform) {
  std::ostringstream o;
  o << method << ", " << s.computes() << " of " << s.steps << " steps compute; objective "
    << fmt("%.4g", objective) << " (uniform spacing: " << fmt("%.4g", uniform) << "); compute at steps:";
  for (int t = 0; t < s.steps; ++t)
    if (s.compute[size_t(t)]) o << " " << t;
  return o.str();
}

}  // namespace

std::vector<std::vector<double>> reuse_distance(const Profile& p, const std::vector<std::string>& kinds,
                                                const std::string& cost) {
  const int T = p.steps();
  const std::vector<size_t> cols = columns(p, kinds);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> d(size_t(T), std::vector<double>(size_t(T), inf));
  CL_CHECK(cost == "output" || !p.pairwise.empty(),
           "scheduler: cost feature needs the profile's pairwise table; profile without --no-pairwise or use cost output");
  for (int j = 0; j < T; ++j)
    for (int u = j + 1; u < T; ++u) {
      double sum = 0;
      bool ok = true;
      for (size_t s : cols) {
        double v = std::nan("");
        if (cost == "feature") v = p.pairwise[s][size_t(j)][size_t(u)];
        else if (u - j <= p.lags) v = p.reuse_output[size_t(u)][s][size_t(u - j)];
        ok = ok && std::isfinite(v);
        sum += v;
      }
      if (ok) d[size_t(j)][size_t(u)] = sum / double(cols.size());
    }
  return d;
}

Schedule DpScheduler::make(const Profile& p, const std::string& file, std::string* summary) const {
  check_budget(p, o_.computes);
  const auto dist = reuse_distance(p, o_.kinds, o_.cost);
  const int max_len = o_.max_len > 0 ? o_.max_len : o_.cost == "output" ? p.lags + 1 : p.steps();
  double objective = 0;
  Schedule s = from_starts(p, "dp", file, dp_group_starts(dist, o_.computes, o_.min_len, max_len, &objective));
  s.objective = objective;
  if (summary) *summary = starts_text(s, "dp", objective, grouping_cost(dist, uniform_starts(p.steps(), o_.computes)));
  return s;
}

template <bool kProfiled>
Schedule StepScheduler<kProfiled>::make(const Profile& p, const std::string& file, std::string* summary) const {
  check_budget(p, o_.computes);
  const auto dist = reuse_distance(p, o_.kinds, o_.cost);
  double threshold = 0;
  const auto starts = kProfiled ? profiled_starts(dist, o_.computes, &threshold) : uniform_starts(p.steps(), o_.computes);
  const char* method = kProfiled ? "profiled" : "uniform";
  Schedule s = from_starts(p, method, file, starts);
  s.objective = grouping_cost(dist, starts);
  if (summary) {
    *summary = starts_text(s, method, s.objective, grouping_cost(dist, uniform_starts(p.steps(), o_.computes)));
    if (kProfiled) *summary += fmt("; reuse while the distance to the last computed step is <= %.4g", threshold);
  }
  return s;
}
template class StepScheduler<false>;
template class StepScheduler<true>;

// BAC: per driven site its own feature distances; the ACS budget is the largest per-site
// count whose mask, after the Bubbling Union, computes at most `computes` steps per site on
// average (the same budget as a K-step schedule).
Schedule BacScheduler::make(const Profile& p, const std::string& file, std::string* summary) const {
  check_budget(p, o_.computes);
  CL_CHECK(!p.pairwise.empty(), "scheduler bac needs the profile's pairwise table; profile without --no-pairwise");
  std::vector<std::vector<std::vector<double>>> dist;
  std::vector<bool> ffn;
  for (size_t s : columns(p, o_.kinds)) {
    dist.push_back(p.pairwise[s]);
    ffn.push_back(p.site_kinds[s] == "mlp");
  }
  BacSchedule b;
  for (int k = o_.computes; k >= 1; --k) {
    b = bac_schedule(dist, ffn, k, o_.union_quantile);
    if (b.mean_computes() <= o_.computes + 1e-9) break;
  }
  Schedule s = from_starts(p, "bac", file, {0});
  s.mask = b.mask;
  s.compute.assign(size_t(s.steps), 0);
  for (int t = 0; t < s.steps; ++t)
    for (uint8_t x : b.mask[size_t(t)]) s.compute[size_t(t)] = s.compute[size_t(t)] || x;
  if (summary)
    *summary = fmt("bac over %.0f sites, %.0f update steps per site from the per-site DP, %.0f added by the Bubbling "
                   "Union: %.2f",
                   double(dist.size()), double(b.acs_computes), double(b.added), b.mean_computes()) +
               " of " + std::to_string(s.steps) + " steps computed per site on average";
  return s;
}

// DiffSparse: token rates per (step, site) under a mean-rate budget of K / T, from the
// profile's partial-reuse errors through a fitted predictor (one exponent per site kind).
Schedule DiffsparseScheduler::make(const Profile& p, const std::string& file, std::string* summary) const {
  check_budget(p, o_.computes);
  CL_CHECK(!p.rates.empty(), "scheduler diffsparse needs a profile with partial-reuse errors; profile with "
                             "`cachelab profile EXP.yaml --rates 0.25,0.5,0.75`");
  CL_CHECK(p.lags >= 1, "scheduler diffsparse needs the lag-1 reuse error; profile with --lags 1 or more");
  const int T = p.steps();
  const std::vector<size_t> cols = columns(p, o_.kinds);
  // The learned cost predictor: e(t, s, r) = e(t, s, 0) (1 - r)^gamma per site kind.
  std::map<std::string, double> gamma;
  std::map<std::string, std::pair<double, int>> fit_err;
  for (auto& k : o_.kinds) {
    std::vector<double> r, ratio;
    for (size_t s : cols)
      if (p.site_kinds[s] == k)
        for (int t = 1; t < T; ++t)
          for (size_t i = 0; i < p.rates.size(); ++i) {
            const double e0 = p.reuse_output[size_t(t)][s][1], e = p.partial_output[size_t(t)][s][i];
            if (std::isfinite(e0) && e0 > 0 && std::isfinite(e) && e > 0) r.push_back(p.rates[i]), ratio.push_back(e / e0);
          }
    if (r.empty()) continue;
    gamma[k] = fit_rate_exponent(r, ratio);
    for (size_t i = 0; i < r.size(); ++i)
      fit_err[k].first += std::fabs(std::pow(1 - r[i], gamma[k]) - ratio[i]) / ratio[i], fit_err[k].second++;
  }
  std::vector<double> choices;
  for (int c = 0; c <= 10; ++c) choices.push_back(c / 10.0);
  std::vector<std::vector<std::vector<double>>> cost(size_t(T), std::vector<std::vector<double>>(cols.size()));
  for (int t = 0; t < T; ++t)
    for (size_t j = 0; j < cols.size(); ++j) {
      const size_t s = cols[j];
      const double e0 = t > 0 ? p.reuse_output[size_t(t)][s][1] : std::nan("");
      const auto g = gamma.find(p.site_kinds[s]);
      CL_CHECK(t == 0 || (std::isfinite(e0) && g != gamma.end()),
               "scheduler diffsparse: no reuse error or fitted predictor for site " << p.site_names[s] << " at step " << t);
      for (double r : choices) cost[size_t(t)][j].push_back(t == 0 ? 0.0 : e0 * std::pow(1 - r, g->second));
    }
  Schedule s = from_starts(p, "diffsparse", file, {0});
  s.rates = dp_token_rates(cost, choices, double(o_.computes) / T, &s.objective);
  s.compute.assign(size_t(T), 0);
  double mean = 0;
  for (int t = 0; t < T; ++t)
    for (double r : s.rates[size_t(t)]) s.compute[size_t(t)] = s.compute[size_t(t)] || r > 0, mean += r;
  mean /= double(T) * double(cols.size());
  if (summary) {
    *summary = fmt("diffsparse token rates over %.0f sites, mean rate %.3f (budget %.0f/%.0f", double(cols.size()), mean,
                   double(o_.computes), double(T)) +
               fmt(" = %.3f); predicted error sum %.4g; predictor e(r) = e(0) (1 - r)^gamma:", double(o_.computes) / T,
                   s.objective);
    for (auto& [k, g] : gamma)
      *summary += " " + k + fmt(" gamma %.3f (mean relative misfit %.2f over %.0f points)", g,
                                fit_err[k].first / std::max(1, fit_err[k].second), double(fit_err[k].second));
  }
  return s;
}

}  // namespace cachelab
