#include "framework/schedule.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "framework/error.h"
#include "framework/lock.h"

namespace cachelab {

int Schedule::computes() const { return int(std::count(compute.begin(), compute.end(), uint8_t(1))); }

namespace {

std::vector<uint8_t> flags(const YAML::Node& n, const std::string& where) {
  CL_CHECK(n.IsSequence(), where << " must be a list of 0 / 1");
  std::vector<uint8_t> out;
  for (const auto& v : n) {
    int x = -1;
    try {
      x = v.as<int>();
    } catch (const YAML::Exception&) {
    }
    CL_CHECK(x == 0 || x == 1, where << " holds `" << v.as<std::string>("?") << "`; each entry must be 0 or 1");
    out.push_back(uint8_t(x));
  }
  return out;
}

}  // namespace

static Schedule parse_schedule(const YAML::Node& root, const std::string& path);

Schedule load_schedule(const std::string& path) {
  CL_CHECK(std::filesystem::exists(path),
           "schedule file " << path << " does not exist; make one with `cachelab schedule PROFILE.h5 --method dp "
                               "--computes K --output "
                            << path << "` (README, \"Schedules\")");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    CL_FAIL(path << ": not a readable schedule file: " << e.what());
  }
  CL_CHECK(root.IsMap(), path << ": not a schedule file (a YAML map with `steps` and `compute`)");
  try {
    return parse_schedule(root, path);
  } catch (const YAML::Exception& e) {  // a value of the wrong type (a map for a number, ...)
    CL_FAIL(path << ": not a readable schedule file: " << e.what());
  }
}

static Schedule parse_schedule(const YAML::Node& root, const std::string& path) {
  Schedule s;
  CL_CHECK(root["steps"] && root["compute"], path << ": a schedule file needs `steps` and `compute`");
  s.method = root["method"] ? root["method"].as<std::string>() : "";
  s.steps = root["steps"].as<int>();
  CL_CHECK(s.steps >= 1, path << ": `steps` must be >= 1, got " << s.steps);
  s.compute = flags(root["compute"], path + ": `compute`");
  CL_CHECK(int(s.compute.size()) == s.steps,
           path << ": `compute` has " << s.compute.size() << " entries for steps: " << s.steps);
  if (root["mask"]) {
    CL_CHECK(root["mask"].IsSequence() && int(root["mask"].size()) == s.steps,
             path << ": `mask` must be a list of " << s.steps << " per-step lists");
    for (size_t t = 0; t < root["mask"].size(); ++t)
      s.mask.push_back(flags(root["mask"][t], path + ": `mask[" + std::to_string(t) + "]`"));
    for (auto& row : s.mask)
      CL_CHECK(row.size() == s.mask[0].size(), path << ": every row of `mask` must have the same length");
  }
  if (root["rates"]) {
    CL_CHECK(root["rates"].IsSequence() && int(root["rates"].size()) == s.steps,
             path << ": `rates` must be a list of " << s.steps << " per-step lists");
    for (size_t t = 0; t < root["rates"].size(); ++t) {
      std::vector<double> row;
      try {
        row = root["rates"][t].as<std::vector<double>>();
      } catch (const YAML::Exception&) {
        CL_FAIL(path << ": `rates[" << t << "]` must be a list of numbers in [0, 1]");
      }
      for (double r : row)
        CL_CHECK(r >= 0 && r <= 1, path << ": `rates[" << t << "]` holds " << r << ", outside [0, 1]");
      CL_CHECK(s.rates.empty() || row.size() == s.rates[0].size(),
               path << ": every row of `rates` must have the same length");
      s.rates.push_back(row);
    }
  }
  if (root["backbone_digest"]) s.backbone_digest = root["backbone_digest"].as<std::string>();
  if (root["profile"]) s.profile = root["profile"].as<std::string>();
  if (root["objective"]) s.objective = root["objective"].as<double>();
  return s;
}

void save_schedule(const Schedule& s, const std::string& path) {
  YAML::Emitter e;
  e << YAML::Comment("cache schedule written by `cachelab schedule`; a `schedule` policy follows it");
  e << YAML::BeginMap;
  e << YAML::Key << "method" << YAML::Value << s.method;
  e << YAML::Key << "steps" << YAML::Value << s.steps;
  e << YAML::Key << "computes" << YAML::Value << s.computes();
  e << YAML::Key << "objective" << YAML::Value << s.objective;
  e << YAML::Key << "backbone_digest" << YAML::Value << s.backbone_digest;
  e << YAML::Key << "profile" << YAML::Value << s.profile;
  auto row = [&](const std::vector<uint8_t>& v) {
    e << YAML::Flow << YAML::BeginSeq;
    for (auto x : v) e << int(x);
    e << YAML::EndSeq;
  };
  e << YAML::Key << "compute" << YAML::Value;
  row(s.compute);
  if (!s.mask.empty()) {
    e << YAML::Key << "mask" << YAML::Value << YAML::BeginSeq;
    for (auto& r : s.mask) row(r);
    e << YAML::EndSeq;
  }
  if (!s.rates.empty()) {
    e << YAML::Key << "rates" << YAML::Value << YAML::BeginSeq;
    for (auto& r : s.rates) {
      e << YAML::Flow << YAML::BeginSeq;
      for (double x : r) e << std::round(x * 1000) / 1000;
      e << YAML::EndSeq;
    }
    e << YAML::EndSeq;
  }
  e << YAML::EndMap;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  write_text_file(path, std::string(e.c_str()) + "\n", "the schedule file");
}

std::vector<int> dp_group_starts(const std::vector<std::vector<double>>& dist, int groups, int min_len, int max_len,
                                 double* objective) {
  const int T = int(dist.size());
  CL_CHECK(T > 0, "dp schedule: no steps");
  CL_CHECK(groups >= 1 && groups <= T, "dp schedule: groups = " << groups << " must be in [1, " << T << "]");
  CL_CHECK(min_len >= 1 && max_len >= min_len, "dp schedule: need 1 <= min_len <= max_len");
  // run_cost(j, e): cost of the run [j, e] (inclusive), as a prefix sum over e per start j.
  std::vector<std::vector<double>> run_cost(size_t(T), std::vector<double>(size_t(T), 0.0));
  for (int j = 0; j < T; ++j) {
    CL_CHECK(int(dist[size_t(j)].size()) == T, "dp schedule: the distance matrix must be T x T");
    for (int e = j + 1; e < T; ++e) run_cost[size_t(j)][size_t(e)] = run_cost[size_t(j)][size_t(e - 1)] + dist[size_t(j)][size_t(e)];
  }
  const double inf = std::numeric_limits<double>::infinity();
  // best[k][i]: least cost of covering steps 0..i-1 with k runs; from[k][i]: start of the last run.
  std::vector<std::vector<double>> best(size_t(groups + 1), std::vector<double>(size_t(T + 1), inf));
  std::vector<std::vector<int>> from(size_t(groups + 1), std::vector<int>(size_t(T + 1), -1));
  best[0][0] = 0;
  for (int k = 1; k <= groups; ++k)
    for (int i = 1; i <= T; ++i)
      for (int len = min_len; len <= std::min(max_len, i); ++len) {
        const int j = i - len;
        const double prev = best[size_t(k - 1)][size_t(j)];
        if (prev == inf) continue;
        const double c = prev + run_cost[size_t(j)][size_t(i - 1)];
        if (c < best[size_t(k)][size_t(i)]) best[size_t(k)][size_t(i)] = c, from[size_t(k)][size_t(i)] = j;
      }
  CL_CHECK(best[size_t(groups)][size_t(T)] < inf, "dp schedule: " << T << " steps cannot be split into " << groups
                                                                  << " runs of length " << min_len << ".." << max_len);
  std::vector<int> starts;
  for (int k = groups, i = T; k > 0; --k) {
    const int j = from[size_t(k)][size_t(i)];
    starts.push_back(j);
    i = j;
  }
  std::reverse(starts.begin(), starts.end());
  if (objective) *objective = best[size_t(groups)][size_t(T)];
  return starts;
}

double grouping_cost(const std::vector<std::vector<double>>& dist, const std::vector<int>& starts) {
  const int T = int(dist.size());
  double c = 0;
  for (size_t g = 0; g < starts.size(); ++g) {
    const int j = starts[g], end = g + 1 < starts.size() ? starts[g + 1] : T;
    for (int u = j + 1; u < end; ++u) c += dist[size_t(j)][size_t(u)];
  }
  return c;
}

namespace {
std::vector<int> greedy(const std::vector<std::vector<double>>& dist, double threshold) {
  std::vector<int> starts = {0};
  for (int u = 1; u < int(dist.size()); ++u)
    if (!(dist[size_t(starts.back())][size_t(u)] <= threshold)) starts.push_back(u);
  return starts;
}
}  // namespace

std::vector<int> profiled_starts(const std::vector<std::vector<double>>& dist, int computes, double* threshold) {
  const int T = int(dist.size());
  CL_CHECK(computes >= 1 && computes <= T, "profiled schedule: computes = " << computes << " must be in [1, " << T << "]");
  // The step count computed falls as the threshold grows; find the least threshold whose
  // count is <= computes. Upper bound: the largest finite distance.
  double lo = 0, hi = 0;
  for (auto& row : dist)
    for (double d : row)
      if (std::isfinite(d)) hi = std::max(hi, d);
  if (int(greedy(dist, lo).size()) <= computes) hi = lo;
  for (int it = 0; it < 200 && hi > lo; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (int(greedy(dist, mid).size()) <= computes) hi = mid;
    else lo = mid;
    if (hi - lo <= 1e-12 * std::max(1.0, hi)) break;
  }
  auto starts = greedy(dist, hi);
  CL_CHECK(int(starts.size()) <= computes,
           "profiled schedule: no threshold computes at most " << computes << " steps (the distances are not finite "
                                                               "over long enough lags; use --cost feature)");
  if (threshold) *threshold = hi;
  return starts;
}

double BacSchedule::mean_computes() const {
  if (mask.empty() || mask[0].empty()) return 0;
  double n = 0;
  for (auto& row : mask)
    for (uint8_t x : row) n += x;
  return n / double(mask[0].size());
}

BacSchedule bac_schedule(const std::vector<std::vector<std::vector<double>>>& dist, const std::vector<bool>& is_ffn,
                         int computes, double quantile) {
  const size_t S = dist.size();
  CL_CHECK(S > 0 && is_ffn.size() == S, "bac schedule: one distance table and one FFN flag per site");
  const int T = int(dist[0].size());
  BacSchedule b;
  b.acs_computes = computes;
  b.mask.assign(size_t(T), std::vector<uint8_t>(S, 0));
  // Adaptive Caching Scheduler: per site, the DP grouping of its own distances.
  std::vector<double> threshold(S, std::numeric_limits<double>::infinity());
  for (size_t s = 0; s < S; ++s) {
    auto starts = dp_group_starts(dist[s], computes, 1, T);
    for (int t : starts) b.mask[size_t(t)][s] = 1;
    if (quantile >= 1) continue;
    std::vector<double> errs;
    int last = 0;
    for (int t = 0; t < T; ++t) {
      if (b.mask[size_t(t)][s]) last = t;
      else if (std::isfinite(dist[s][size_t(last)][size_t(t)])) errs.push_back(dist[s][size_t(last)][size_t(t)]);
    }
    if (errs.empty()) continue;
    std::sort(errs.begin(), errs.end());
    threshold[s] = errs[std::min(errs.size() - 1, size_t(std::floor(quantile * double(errs.size()))))];
  }
  // Bubbling Union: walk the steps; the last update of each site follows the growing mask.
  std::vector<int> last(S, 0);
  for (int t = 0; t < T; ++t) {
    for (size_t m = 0; m < S; ++m) {
      if (!is_ffn[m] || !b.mask[size_t(t)][m]) continue;
      for (size_t u = 0; u < m; ++u)
        if (!b.mask[size_t(t)][u] && dist[u][size_t(last[u])][size_t(t)] > threshold[u]) {
          b.mask[size_t(t)][u] = 1;
          ++b.added;
        }
    }
    for (size_t s = 0; s < S; ++s)
      if (b.mask[size_t(t)][s]) last[s] = t;
  }
  return b;
}

double fit_rate_exponent(const std::vector<double>& rates, const std::vector<double>& error_ratio) {
  CL_CHECK(rates.size() == error_ratio.size(), "rate exponent: one error ratio per rate");
  double sxx = 0, sxy = 0;
  for (size_t i = 0; i < rates.size(); ++i) {
    if (!(rates[i] > 0 && rates[i] < 1) || !(error_ratio[i] > 0) || !std::isfinite(error_ratio[i])) continue;
    const double x = std::log(1 - rates[i]), y = std::log(error_ratio[i]);
    sxx += x * x, sxy += x * y;
  }
  CL_CHECK(sxx > 0, "rate exponent: no usable (rate, error) pair to fit (rates in (0, 1), errors > 0)");
  return sxy / sxx;
}

std::vector<std::vector<double>> dp_token_rates(const std::vector<std::vector<std::vector<double>>>& cost,
                                                const std::vector<double>& choices, double budget, double* objective) {
  const size_t T = cost.size(), S = T ? cost[0].size() : 0, C = choices.size();
  CL_CHECK(T > 0 && S > 0 && C >= 2, "token rates: need steps, sites and at least two rate choices");
  CL_CHECK(choices.front() == 0 && choices.back() == 1, "token rates: the choices must run from 0 to 1");
  // Rates in units of the smallest spacing (choices on one grid, e.g. 0, 0.1, ..., 1).
  const int units = int(std::lround(1.0 / (choices[1] - choices[0])));
  std::vector<int> unit(C);
  for (size_t c = 0; c < C; ++c) {
    unit[c] = int(std::lround(choices[c] * units));
    CL_CHECK(std::fabs(unit[c] - choices[c] * units) < 1e-6, "token rates: the choices must be multiples of " << 1.0 / units);
  }
  // Step 0 computes in full (there is nothing to reuse); it is not charged to the choice.
  const int total = int(std::floor(budget * double(T * S) * units + 1e-9)) - int(S) * units;
  CL_CHECK(total >= 0, "token rates: a budget of " << budget << " does not cover the first step's full computation");
  const size_t items = (T - 1) * S;
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> best(size_t(total) + 1, 0.0), next(size_t(total) + 1);
  std::vector<std::vector<uint8_t>> pick(items, std::vector<uint8_t>(size_t(total) + 1, 0));
  for (size_t i = 0; i < items; ++i) {
    const auto& row = cost[1 + i / S][i % S];
    for (int b = 0; b <= total; ++b) {
      double v = inf;
      for (size_t c = 0; c < C; ++c)
        if (unit[c] <= b && std::isfinite(row[c]) && best[size_t(b - unit[c])] + row[c] < v)
          v = best[size_t(b - unit[c])] + row[c], pick[i][size_t(b)] = uint8_t(c);
      next[size_t(b)] = v;
    }
    best.swap(next);
  }
  CL_CHECK(std::isfinite(best[size_t(total)]), "token rates: no choice of rates fits the budget (a site has no finite cost)");
  if (objective) *objective = best[size_t(total)];
  std::vector<std::vector<double>> rates(T, std::vector<double>(S, 1.0));
  int b = total;
  for (size_t i = items; i-- > 0;) {
    const uint8_t c = pick[i][size_t(b)];
    rates[1 + i / S][i % S] = choices[c];
    b -= unit[c];
  }
  return rates;
}

std::vector<int> uniform_starts(int steps, int groups) {
  CL_CHECK(groups >= 1 && groups <= steps, "uniform schedule: computes = " << groups << " must be in [1, " << steps << "]");
  std::vector<int> s;
  for (int i = 0; i < groups; ++i) s.push_back(int(std::lround(double(i) * steps / groups)));
  return s;
}

std::vector<uint8_t> compute_from_starts(int steps, const std::vector<int>& starts) {
  std::vector<uint8_t> c(size_t(steps), 0);
  for (int s : starts) {
    CL_CHECK(s >= 0 && s < steps, "schedule: start " << s << " is outside 0.." << steps - 1);
    c[size_t(s)] = 1;
  }
  return c;
}

}  // namespace cachelab
