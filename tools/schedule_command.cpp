// `cachelab profile` and `cachelab schedule`: profile a reference trajectory, then build
// cache schedules from the profile (framework/profile.h, framework/schedule.h).
#include "tools/schedule_command.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>

#include "framework/error.h"
#include "framework/experiment.h"
#include "framework/profile.h"
#include "framework/schedule.h"
#include "framework/site.h"
#include "framework/session.h"

namespace po = boost::program_options;

namespace cachelab {
namespace {

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

po::variables_map parse(int argc, char** argv, const po::options_description& opts, std::vector<std::string>& pos,
                        const char* usage) {
  po::options_description all;
  po::options_description hidden;
  hidden.add_options()("args", po::value(&pos));
  all.add(opts).add(hidden);
  po::positional_options_description p;
  p.add("args", -1);
  po::variables_map vm;
  try {
    // argv[1] is the subcommand.
    po::store(po::command_line_parser(argc - 1, argv + 1).options(all).positional(p).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    CL_FAIL(e.what() << " (see `" << usage << " --help`)");
  }
  return vm;
}

int profile_command(int argc, char** argv) {
  ProfileOptions o;
  std::string kinds, results = "results", rates;
  std::vector<std::string> only, pos;
  int threads = 0;
  po::options_description opts(
      "cachelab profile EXP.yaml [key=value ...]: profile the uncached reference trajectory of the experiment "
      "(drift and reuse error per step and site) into an HDF5 file");
  opts.add_options()("help,h", "this help")("lags", po::value(&o.lags)->default_value(3),
                                            "reuse error for lags 0..N steps")(
      "samples", po::value(&o.samples)->default_value(4), "samples profiled (one batch)")(
      "kinds", po::value(&kinds), "site kinds profiled, comma-separated (default: every site but the model)")(
      "no-pairwise", "skip the [site, step, step] distance table (saves memory on long trajectories)")(
      "rates", po::value(&rates),
      "token rates, comma-separated (e.g. 0.25,0.5,0.75): also measure the error when a token site recomputes only "
      "that fraction of its tokens (one extra forward per step, site and rate; for --method diffsparse)")(
      "only", po::value(&only), "profile the reference of this variant (repeatable)")(
      "output", po::value(&o.output), "output file (default <results>/<experiment>/profiles/<reference>.h5)")(
      "results", po::value(&results), "results root folder (default results/)")(
      "threads", po::value(&threads), "intra-op threads (overrides run.threads)");
  auto vm = parse(argc, argv, opts, pos, "cachelab profile");
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  CL_CHECK(o.lags >= 0 && o.lags <= 50, "--lags " << o.lags << ": give 0..50");
  CL_CHECK(o.samples >= 1, "--samples " << o.samples << ": give at least 1");
  CL_CHECK(!vm.count("threads") || threads >= 1, "--threads " << threads << ": give at least 1 thread");
  o.kinds = split_commas(kinds);
  for (auto& k : o.kinds) site_kind_from_name(k);  // an unknown kind fails here, naming the kinds
  o.pairwise = !vm.count("no-pairwise");
  for (auto& r : split_commas(rates)) {
    double v = -1;
    try {
      v = std::stod(r);
    } catch (const std::exception&) {
    }
    CL_CHECK(v > 0 && v < 1, "--rates: `" << r << "` is not a rate strictly between 0 and 1 (e.g. 0.25,0.5,0.75)");
    o.rates.push_back(v);
  }
  std::string file;
  std::vector<std::string> overrides;
  for (auto& a : pos) (a.find('=') != std::string::npos ? overrides.push_back(a) : void(file = a));
  CL_CHECK(!file.empty(), "usage: cachelab profile EXP.yaml [key=value ...] [--lags N] [--samples N] [--output F]");
  ExperimentSpec spec = load_experiment(file, overrides);
  check_only(spec, only);
  SweepOptions so;
  so.results_root = results;
  so.threads = threads;
  so.only = only;
  profile_experiment(spec, so, o);
  return 0;
}

// dist[j][u]: the error of reusing step j's features at step u > j, from the profile.
std::vector<std::vector<double>> reuse_distance(const Profile& p, const std::vector<std::string>& kinds,
                                                const std::string& cost) {
  const int T = p.steps();
  std::vector<size_t> cols;
  for (size_t s = 0; s < p.site_kinds.size(); ++s)
    for (auto& k : kinds)
      if (p.site_kinds[s] == k) cols.push_back(s);
  CL_CHECK(!cols.empty(), "schedule: the profile has no site of kind " << kinds[0] << " (it has "
                                                                       << (p.site_kinds.empty() ? "none" : p.site_kinds[0])
                                                                       << ", ...); see --kinds");
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> d(size_t(T), std::vector<double>(size_t(T), inf));
  CL_CHECK(cost == "output" || !p.pairwise.empty(),
           "schedule: --cost feature needs the pairwise table; profile without --no-pairwise or use --cost output");
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

// BAC: per driven site its own feature distances; the ACS budget is the largest per-site
// count whose mask, after the Bubbling Union, computes at most `computes` steps per site on
// average (the same budget as a K-step schedule).
int bac_command(const Profile& p, const std::string& file, const std::vector<std::string>& kinds, int computes,
                double quantile, const std::string& output) {
  CL_CHECK(!p.pairwise.empty(), "schedule: --method bac needs the pairwise table; profile without --no-pairwise");
  std::vector<std::vector<std::vector<double>>> dist;
  std::vector<bool> ffn;
  for (size_t s = 0; s < p.site_kinds.size(); ++s)
    if (std::find(kinds.begin(), kinds.end(), p.site_kinds[s]) != kinds.end()) {
      dist.push_back(p.pairwise[s]);
      ffn.push_back(p.site_kinds[s] == "mlp");
    }
  CL_CHECK(!dist.empty(), "schedule: the profile has no site of the kinds given by --kinds");
  BacSchedule b;
  for (int k = computes; k >= 1; --k) {
    b = bac_schedule(dist, ffn, k, quantile);
    if (b.mean_computes() <= computes + 1e-9) break;
  }
  Schedule s;
  s.method = "bac";
  s.steps = p.steps();
  s.backbone_digest = p.backbone_digest;
  s.profile = file;
  s.mask = b.mask;
  s.compute.assign(size_t(s.steps), 0);
  for (int t = 0; t < s.steps; ++t)
    for (uint8_t x : b.mask[size_t(t)]) s.compute[size_t(t)] = s.compute[size_t(t)] || x;
  save_schedule(s, output);
  std::printf("[cachelab] wrote %s: bac over %zu sites, %d update steps per site from the per-site DP, %d added by the "
              "Bubbling Union: %.2f of %d steps computed per site on average\n",
              output.c_str(), dist.size(), b.acs_computes, b.added, b.mean_computes(), s.steps);
  return 0;
}

// DiffSparse: token rates per (step, site) under a mean-rate budget of K / T, from the
// profile's partial-reuse errors through a fitted predictor (one exponent per site kind).
int diffsparse_command(const Profile& p, const std::string& file, const std::vector<std::string>& kinds,
                       int computes, const std::string& output) {
  CL_CHECK(!p.rates.empty(), "schedule: --method diffsparse needs a profile with partial-reuse errors; profile with "
                             "`cachelab profile EXP.yaml --rates 0.25,0.5,0.75`");
  CL_CHECK(p.lags >= 1, "schedule: --method diffsparse needs the lag-1 reuse error; profile with --lags 1 or more");
  const int T = p.steps();
  std::vector<size_t> cols;
  for (size_t s = 0; s < p.site_kinds.size(); ++s)
    if (std::find(kinds.begin(), kinds.end(), p.site_kinds[s]) != kinds.end()) cols.push_back(s);
  CL_CHECK(!cols.empty(), "schedule: the profile has no site of the kinds given by --kinds");
  // The learned cost predictor: e(t, s, r) = e(t, s, 0) (1 - r)^gamma per site kind.
  std::map<std::string, double> gamma;
  std::map<std::string, std::pair<double, int>> fit_err;
  for (auto& k : kinds) {
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
               "schedule: no reuse error or fitted predictor for site " << p.site_names[s] << " at step " << t);
      for (double r : choices) cost[size_t(t)][j].push_back(t == 0 ? 0.0 : e0 * std::pow(1 - r, g->second));
    }
  Schedule s;
  s.method = "diffsparse";
  s.steps = T;
  s.backbone_digest = p.backbone_digest;
  s.profile = file;
  s.rates = dp_token_rates(cost, choices, double(computes) / T, &s.objective);
  s.compute.assign(size_t(T), 0);
  double mean = 0;
  for (int t = 0; t < T; ++t)
    for (double r : s.rates[size_t(t)]) s.compute[size_t(t)] = s.compute[size_t(t)] || r > 0, mean += r;
  mean /= double(T) * double(cols.size());
  save_schedule(s, output);
  std::printf("[cachelab] wrote %s: diffsparse token rates over %zu sites, mean rate %.3f (budget %d/%d = %.3f); "
              "predicted error sum %.4g\n  predictor e(r) = e(0) (1 - r)^gamma:",
              output.c_str(), cols.size(), mean, computes, T, double(computes) / T, s.objective);
  for (auto& [k, g] : gamma)
    std::printf(" %s gamma %.3f (mean relative misfit %.2f over %d points)", k.c_str(), g,
                fit_err[k].first / std::max(1, fit_err[k].second), fit_err[k].second);
  std::printf("\n");
  return 0;
}

int schedule_command(int argc, char** argv) {
  std::string method = "dp", kinds = "attn,mlp", cost = "feature", output;
  int computes = 0, min_len = 1, max_len = 0;
  double union_quantile = 0.5;
  std::vector<std::string> pos;
  po::options_description opts(
      "cachelab schedule PROFILE.h5 --computes K --output FILE.yaml: a cache schedule (which steps compute) for a "
      "`schedule` policy, built from a profile");
  opts.add_options()("help,h", "this help")("method", po::value(&method)->default_value("dp"),
                                            "dp (CacheQuant's dynamic programme) | uniform | profiled (greedy threshold on the profiled distance) | "
                                            "bac (per-site DP + Bubbling Union: a per-step x per-site mask) | diffsparse (per-step x per-site token "
                                            "rates from a fitted cost predictor and a DP; needs a profile made with --rates)")(
      "computes", po::value(&computes), "K: steps that compute (the budget); the others reuse")(
      "min-len", po::value(&min_len)->default_value(1), "dp: shortest run of steps sharing one computation")(
      "max-len", po::value(&max_len), "dp: longest run (default: no bound for --cost feature, lags + 1 for output)")(
      "kinds", po::value(&kinds)->default_value("attn,mlp"), "site kinds whose reuse error is summed")(
      "cost", po::value(&cost)->default_value("feature"),
      "feature: the sites' output distance to the run's first step | output: the model-output reuse error")(
      "output", po::value(&output), "the schedule file to write (YAML)")(
      "union-quantile", po::value(&union_quantile)->default_value(0.5),
      "bac: an upstream site also updates with a downstream FFN when its caching error exceeds this quantile of its "
      "own (1 = no union)");
  auto vm = parse(argc, argv, opts, pos, "cachelab schedule");
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  CL_CHECK(pos.size() == 1, "usage: cachelab schedule PROFILE.h5 --computes K --output FILE.yaml [--method dp]");
  CL_CHECK(method == "dp" || method == "uniform" || method == "profiled" || method == "bac" || method == "diffsparse",
           "--method " << method << ": give dp, uniform, profiled, bac or diffsparse");
  CL_CHECK(cost == "feature" || cost == "output", "--cost " << cost << ": give feature or output");
  CL_CHECK(!output.empty(), "--output: name the schedule file to write (e.g. schedules/dp-k17.yaml)");
  const Profile p = read_profile(pos[0]);
  const int T = p.steps();
  CL_CHECK(computes >= 1 && computes <= T, "--computes " << computes << ": give 1.." << T << " (the profile has " << T
                                                         << " steps)");
  if (method == "bac") return bac_command(p, pos[0], split_commas(kinds), computes, union_quantile, output);
  if (method == "diffsparse") return diffsparse_command(p, pos[0], split_commas(kinds), computes, output);
  const auto dist = reuse_distance(p, split_commas(kinds), cost);
  if (!vm.count("max-len")) max_len = cost == "output" ? p.lags + 1 : T;
  Schedule s;
  s.method = method;
  s.steps = T;
  s.backbone_digest = p.backbone_digest;
  s.profile = pos[0];
  std::vector<int> starts;
  if (method == "dp") starts = dp_group_starts(dist, computes, min_len, max_len, &s.objective);
  else if (method == "profiled") {
    double threshold = 0;
    starts = profiled_starts(dist, computes, &threshold);
    s.objective = grouping_cost(dist, starts);
    std::printf("[cachelab] profiled: reuse while the distance to the last computed step is <= %.4g\n", threshold);
  } else starts = uniform_starts(T, computes), s.objective = grouping_cost(dist, starts);
  s.compute = compute_from_starts(T, starts);
  save_schedule(s, output);
  const double uniform = grouping_cost(dist, uniform_starts(T, computes));
  std::printf("[cachelab] wrote %s: %s, %d of %d steps compute; objective %.4g (uniform spacing: %.4g)\n",
              output.c_str(), method.c_str(), s.computes(), T, s.objective, uniform);
  std::printf("  compute at steps:");
  for (int x : starts) std::printf(" %d", x);
  std::printf("\n");
  return 0;
}

}  // namespace

int schedule_commands(int argc, char** argv) {
  const std::string cmd = argv[1];
  return cmd == "profile" ? profile_command(argc, argv) : schedule_command(argc, argv);
}

}  // namespace cachelab
