// Schedules and profiles: the DP schedule is optimal (checked against brute force), a
// schedule file round-trips and a bad one is refused, a profile's lag-0 reuse error is zero.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <random>

#include "framework/profile.h"
#include "framework/registries.h"
#include "framework/schedule.h"
#include "framework/schedulers.h"
#include "framework/session.h"
#include "tests/test_util.h"
#include "tools/components.h"

using namespace cachelab;

namespace {

// Every grouping of T steps into `groups` runs with lengths in [lo, hi]: the least cost.
double brute_force(const std::vector<std::vector<double>>& d, int groups, int lo, int hi) {
  const int T = int(d.size());
  double best = INFINITY;
  // Choose groups-1 interior starts among 1..T-1 by bitmask.
  for (uint32_t mask = 0; mask < (1u << (T - 1)); ++mask) {
    if (__builtin_popcount(mask) != groups - 1) continue;
    std::vector<int> starts = {0};
    for (int i = 1; i < T; ++i)
      if (mask & (1u << (i - 1))) starts.push_back(i);
    bool ok = true;
    for (size_t g = 0; g < starts.size(); ++g) {
      const int len = (g + 1 < starts.size() ? starts[g + 1] : T) - starts[g];
      ok = ok && len >= lo && len <= hi;
    }
    if (ok) best = std::min(best, grouping_cost(d, starts));
  }
  return best;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(schedule)

BOOST_AUTO_TEST_CASE(dp_grouping_matches_brute_force) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  int cases = 0;
  for (int T = 1; T <= 11; ++T) {
    // Distances that grow with the gap (as feature drift does), plus noise.
    std::vector<std::vector<double>> d(size_t(T), std::vector<double>(size_t(T), 0.0));
    for (int j = 0; j < T; ++j)
      for (int k = j + 1; k < T; ++k) d[size_t(j)][size_t(k)] = (k - j) * u(rng) + u(rng);
    for (int groups = 1; groups <= T; ++groups)
      for (auto [lo, hi] : {std::pair{1, T}, std::pair{2, 3}, std::pair{1, 2}}) {
        const double want = brute_force(d, groups, lo, hi);
        if (!std::isfinite(want)) {
          BOOST_CHECK_THROW(dp_group_starts(d, groups, lo, hi), Error);
          continue;
        }
        double got = 0;
        auto starts = dp_group_starts(d, groups, lo, hi, &got);
        BOOST_REQUIRE_EQUAL(int(starts.size()), groups);
        BOOST_CHECK_EQUAL(starts[0], 0);
        BOOST_CHECK_CLOSE(got + 1e-12, want + 1e-12, 1e-9);
        BOOST_CHECK_CLOSE(grouping_cost(d, starts) + 1e-12, got + 1e-12, 1e-9);
        ++cases;
      }
  }
  BOOST_CHECK_GT(cases, 100);
}

BOOST_AUTO_TEST_CASE(profiled_selection_meets_its_budget_and_never_beats_the_dp) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int T = 30;
  std::vector<std::vector<double>> d(T, std::vector<double>(T, 0.0));
  for (int j = 0; j < T; ++j)
    for (int k = j + 1; k < T; ++k) d[size_t(j)][size_t(k)] = (k - j) * (0.2 + u(rng)) * (j < 10 ? 0.3 : 1.0);
  for (int K : {3, 8, 15, 30}) {
    double thr = 0;
    auto starts = profiled_starts(d, K, &thr);
    BOOST_CHECK_LE(int(starts.size()), K);
    BOOST_CHECK_EQUAL(starts[0], 0);
    // Every reused step is within the threshold of its computed step.
    for (size_t g = 0; g < starts.size(); ++g)
      for (int x = starts[g] + 1; x < (g + 1 < starts.size() ? starts[g + 1] : T); ++x)
        BOOST_CHECK_LE(d[size_t(starts[g])][size_t(x)], thr);
    // The DP with the same number of runs is optimal, so never worse.
    double dp = 0;
    dp_group_starts(d, int(starts.size()), 1, T, &dp);
    BOOST_CHECK_LE(dp, grouping_cost(d, starts) + 1e-12);
  }
}

BOOST_AUTO_TEST_CASE(uniform_starts_are_evenly_spread_and_compute_vectors_count_them) {
  auto s = uniform_starts(50, 17);
  BOOST_REQUIRE_EQUAL(s.size(), 17u);
  BOOST_CHECK_EQUAL(s[0], 0);
  for (size_t i = 1; i < s.size(); ++i) BOOST_CHECK(s[i] - s[i - 1] == 2 || s[i] - s[i - 1] == 3 || s[i] - s[i - 1] == 4);
  auto c = compute_from_starts(50, s);
  BOOST_CHECK_EQUAL(std::count(c.begin(), c.end(), 1), 17);
}

BOOST_AUTO_TEST_CASE(schedule_files_round_trip_and_bad_ones_are_refused) {
  cachelab::testing::TempDir d;
  Schedule s;
  s.method = "dp";
  s.steps = 6;
  s.compute = {1, 0, 0, 1, 0, 1};
  s.mask = {{1, 1}, {0, 1}, {0, 0}, {1, 1}, {0, 0}, {1, 0}};
  s.backbone_digest = "0123456789abcdef";
  s.objective = 0.25;
  save_schedule(s, d.path + "/s.yaml");
  auto r = load_schedule(d.path + "/s.yaml");
  BOOST_CHECK_EQUAL(r.method, "dp");
  BOOST_CHECK(r.compute == s.compute);
  BOOST_CHECK(r.mask == s.mask);
  BOOST_CHECK_EQUAL(r.backbone_digest, s.backbone_digest);
  BOOST_CHECK_EQUAL(r.computes(), 3);
  cachelab::testing::check_error([&] { load_schedule(d.path + "/missing.yaml"); }, {"does not exist", "cachelab schedule"});
  d.file("bad.yaml", "steps: 3\ncompute: [1, 2, 0]\n");
  cachelab::testing::check_error([&] { load_schedule(d.path + "/bad.yaml"); }, {"bad.yaml", "0 or 1"});
  d.file("short.yaml", "steps: 4\ncompute: [1, 0, 0]\n");
  cachelab::testing::check_error([&] { load_schedule(d.path + "/short.yaml"); }, {"3 entries", "steps: 4"});
  // Values of the wrong type and files that are no map end in a clear error (found by fuzzing).
  d.file("typed.yaml", "steps: {a: 1}\ncompute: [1]\n");
  cachelab::testing::check_error([&] { load_schedule(d.path + "/typed.yaml"); }, {"typed.yaml", "not a readable schedule file"});
  d.file("list.yaml", "- 1\n- 2\n");
  cachelab::testing::check_error([&] { load_schedule(d.path + "/list.yaml"); }, {"list.yaml", "not a schedule file"});
  d.file("zero.yaml", "steps: 0\ncompute: []\n");
  cachelab::testing::check_error([&] { load_schedule(d.path + "/zero.yaml"); }, {"`steps` must be >= 1"});
}

BOOST_AUTO_TEST_CASE(profile_reuse_error_is_zero_at_lag_zero_and_grows_with_lag) {
  cachelab::testing::TempDir d;
  Dit m(cachelab::testing::tiny_dit_options());
  cachelab::testing::randomize(m);
  m.save(d.path + "/w.safetensors", {});
  const std::string file = d.file(
      "e.yaml", "name: p\nbackbone: {type: dit, input_size: 8, patch_size: 2, hidden_size: 32, depth: 4, num_heads: 2, "
                "weights: " + d.path + "/w.safetensors}\nsampler: {type: ddim, steps: 8}\nrun: {samples: 2, batch: 2}\n"
                "variants:\n  fora: {cache: {type: fora, interval: 2}}\n");
  auto spec = load_experiment(file, {});
  SweepOptions so;
  so.results_root = d.path + "/results";
  ProfileOptions po;
  po.lags = 2;
  po.samples = 2;
  auto files = profile_experiment(spec, so, po);
  BOOST_REQUIRE_EQUAL(files.size(), 1u);
  Profile p = read_profile(files[0]);
  BOOST_REQUIRE_EQUAL(p.steps(), 8);
  BOOST_CHECK_EQUAL(p.site_names.size(), 1u + 4u * 3u);  // body + 4 x (block, attn, mlp)
  BOOST_CHECK_EQUAL(p.backbone_digest.size(), 16u);
  double lag1 = 0, lag2 = 0;
  int n = 0;
  for (int t = 0; t < 8; ++t)
    for (size_t s = 0; s < p.site_names.size(); ++s) {
      // Lag 0 substitutes the site's own value: the model output is unchanged, exactly.
      BOOST_CHECK_EQUAL(p.reuse_output[size_t(t)][s][0], 0.0);
      BOOST_CHECK_EQUAL(p.reuse_site[size_t(t)][s][0], 0.0);
      BOOST_CHECK(std::isnan(p.reuse_output[0][s][1]));  // nothing before step 0
      if (t >= 2) {
        BOOST_CHECK(std::isfinite(p.reuse_output[size_t(t)][s][1]) && p.reuse_output[size_t(t)][s][1] > 0);
        lag1 += p.reuse_site[size_t(t)][s][1], lag2 += p.reuse_site[size_t(t)][s][2], ++n;
      }
      // The pairwise table agrees with the lag-1 site error (to half precision).
      if (t >= 1)
        BOOST_CHECK_CLOSE(p.pairwise[s][size_t(t - 1)][size_t(t)], p.reuse_site[size_t(t)][s][1], 1.0);
    }
  BOOST_CHECK_GT(n, 0);
  BOOST_CHECK_GT(lag2, lag1);  // older values are further away on average
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(bac)

// dist[j][u] for u > j: a cumulative drift, cost of reusing step j at u.
std::vector<std::vector<double>> drift_table(const std::vector<double>& step_drift) {
  const int T = int(step_drift.size());
  std::vector<std::vector<double>> d(size_t(T), std::vector<double>(size_t(T), 0.0));
  for (int j = 0; j < T; ++j)
    for (int u = j + 1; u < T; ++u) d[size_t(j)][size_t(u)] = d[size_t(j)][size_t(u - 1)] + step_drift[size_t(u)];
  return d;
}

BOOST_AUTO_TEST_CASE(acs_is_the_per_site_dp_and_the_union_cuts_upstream_errors_before_ffns) {
  // Site 0 (attention) drifts early, site 1 (FFN) drifts late, site 2 (attention) after the FFN.
  const std::vector<std::vector<std::vector<double>>> dist = {
      drift_table({0, 5, 4, 3, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1}),
      drift_table({0, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 3, 4, 5, 6, 7}),
      drift_table({0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})};
  const std::vector<bool> ffn = {false, true, false};
  // quantile 1: no union; every site follows its own DP grouping exactly.
  auto none = bac_schedule(dist, ffn, 4, 1.0);
  BOOST_CHECK_EQUAL(none.added, 0);
  for (size_t s = 0; s < dist.size(); ++s) {
    auto starts = dp_group_starts(dist[s], 4, 1, 12);
    for (int t = 0; t < 12; ++t)
      BOOST_CHECK_EQUAL(none.mask[size_t(t)][s], std::count(starts.begin(), starts.end(), t) ? 1 : 0);
  }
  BOOST_CHECK_CLOSE(none.mean_computes(), 4.0, 1e-9);
  // quantile 0: wherever the FFN updates, the upstream attention updates too unless its
  // error there is its smallest; the downstream site and the FFN's own row are unchanged.
  auto all = bac_schedule(dist, ffn, 4, 0.0);
  BOOST_CHECK_EQUAL(all.added, 1);  // step 10: 0.3 since its update at 7 (steps 8 and 11: 0.1, not above)
  int last0 = 0;
  for (int t = 0; t < 12; ++t) {
    BOOST_CHECK_EQUAL(all.mask[size_t(t)][1], none.mask[size_t(t)][1]);
    BOOST_CHECK_EQUAL(all.mask[size_t(t)][2], none.mask[size_t(t)][2]);
    BOOST_CHECK_GE(all.mask[size_t(t)][0], none.mask[size_t(t)][0]);  // the union only adds
    // Its smallest caching error under ACS is 0.1 (step 8, one step after its update at 7).
    if (all.mask[size_t(t)][1] && !none.mask[size_t(t)][0])
      BOOST_CHECK_MESSAGE(all.mask[size_t(t)][0] == (dist[0][size_t(last0)][size_t(t)] > 0.1 + 1e-9), "step " << t);
    if (all.mask[size_t(t)][0]) last0 = t;
  }
  BOOST_CHECK_CLOSE(all.mean_computes(), 4.0 + all.added / 3.0, 1e-9);
  // Without an FFN nothing bubbles.
  BOOST_CHECK_EQUAL(bac_schedule(dist, {false, false, false}, 4, 0.0).added, 0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(diffsparse)

BOOST_AUTO_TEST_CASE(the_rate_predictor_recovers_its_exponent) {
  std::vector<double> r, ratio;
  std::mt19937 gen(3);
  std::normal_distribution<double> noise(0, 0.01);
  for (int k = 0; k < 30; ++k)
    for (double x : {0.25, 0.5, 0.75}) r.push_back(x), ratio.push_back(std::pow(1 - x, 1.7) * std::exp(noise(gen)));
  BOOST_CHECK_CLOSE(fit_rate_exponent(r, ratio), 1.7, 1.0);
  BOOST_CHECK_THROW(fit_rate_exponent({0.0, 1.0}, {1.0, 0.0}), Error);
}

BOOST_AUTO_TEST_CASE(token_rate_dp_matches_brute_force_under_its_budget) {
  std::mt19937 gen(5);
  std::uniform_real_distribution<double> u(0.1, 1.0);
  const std::vector<double> choices = {0, 0.5, 1};
  for (int trial = 0; trial < 20; ++trial) {
    const size_t T = 3, S = 2;
    std::vector<std::vector<std::vector<double>>> cost(T, std::vector<std::vector<double>>(S));
    for (auto& step : cost)
      for (auto& site : step) {
        const double e0 = u(gen), g = 0.5 + u(gen);
        for (double c : choices) site.push_back(e0 * std::pow(1 - c, g));
      }
    const double budget = 0.5 + 0.05 * (trial % 6);  // mean rate over the 6 (step, site) pairs
    double obj = 0;
    auto rates = dp_token_rates(cost, choices, budget, &obj);
    // Brute force over the 3^4 choices of steps 1 and 2 (step 0 is full).
    double best = INFINITY;
    for (int m = 0; m < 81; ++m) {
      double sum_rate = double(S), e = 0;
      for (int i = 0, x = m; i < 4; ++i, x /= 3) sum_rate += choices[size_t(x % 3)], e += cost[1 + size_t(i) / S][size_t(i) % S][size_t(x % 3)];
      if (sum_rate <= budget * double(T * S) + 1e-9) best = std::min(best, e);
    }
    BOOST_CHECK_CLOSE(obj, best, 1e-9);
    double used = 0, e = 0;
    for (size_t t = 0; t < T; ++t)
      for (size_t s = 0; s < S; ++s) {
        used += rates[t][s];
        if (t > 0) e += cost[t][s][size_t(std::lround(rates[t][s] * 2))];
      }
    BOOST_CHECK_LE(used, budget * double(T * S) + 1e-9);
    BOOST_CHECK_CLOSE(e, obj, 1e-9);
    BOOST_CHECK_EQUAL(rates[0][0], 1.0);
  }
}

BOOST_AUTO_TEST_SUITE_END()


BOOST_AUTO_TEST_SUITE(schedulers_as_components)

// A profile of T steps and two sites with random pairwise distances (no model needed).
Profile synthetic_profile(int T) {
  Profile p;
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(0.01, 1.0);
  for (int t = 0; t < T; ++t) p.t.push_back(1000 - 20 * t);
  p.site_names = {"blocks.0.attn", "blocks.0.mlp"};
  p.site_kinds = {"attn", "mlp"};
  p.lags = 1;
  p.pairwise.assign(2, std::vector<std::vector<double>>(size_t(T), std::vector<double>(size_t(T), 0.0)));
  for (auto& site : p.pairwise)
    for (int j = 0; j < T; ++j)
      for (int k = j + 1; k < T; ++k) site[size_t(j)][size_t(k)] = site[size_t(k)][size_t(j)] = u(rng) * (k - j);
  return p;
}

BOOST_AUTO_TEST_CASE(each_registered_maker_gives_its_rule_on_the_profile) {
  register_components();
  const Profile p = synthetic_profile(9);
  auto make = [&](const std::string& yaml) {
    return schedulers().build(parse_config_string(yaml, "s.yaml"))->make(p, "p.h5", nullptr);
  };
  const auto dist = reuse_distance(p, {"attn", "mlp"}, "feature");
  BOOST_CHECK_CLOSE(dist[1][4], (p.pairwise[0][1][4] + p.pairwise[1][1][4]) / 2, 1e-12);
  // dp: the optimum of the grouping (checked against brute force above) at K = 4.
  const Schedule dp = make("type: dp\ncomputes: 4\n");
  BOOST_CHECK(dp.compute == compute_from_starts(9, dp_group_starts(dist, 4, 1, 9)));
  BOOST_CHECK_EQUAL(dp.computes(), 4);
  BOOST_CHECK_EQUAL(dp.profile, "p.h5");
  BOOST_CHECK_LE(dp.objective, grouping_cost(dist, uniform_starts(9, 4)) + 1e-12);
  BOOST_CHECK(make("type: uniform\ncomputes: 4\n").compute == compute_from_starts(9, uniform_starts(9, 4)));
  double threshold = 0;
  BOOST_CHECK(make("type: profiled\ncomputes: 4\n").compute == compute_from_starts(9, profiled_starts(dist, 4, &threshold)));
  // A per-site mask at most K computed steps per site on average.
  const Schedule bac = make("type: bac\ncomputes: 4\nunion_quantile: 1\n");
  BOOST_REQUIRE_EQUAL(bac.mask.size(), 9u);
  double per_site = 0;
  for (auto& row : bac.mask)
    for (uint8_t x : row) per_site += x;
  BOOST_CHECK_LE(per_site / 2, 4.0 + 1e-9);
  // Clear errors: a budget beyond the profile, a maker that needs what the profile lacks.
  cachelab::testing::check_error([&] { make("type: dp\ncomputes: 12\n"); }, {"computes 12", "1..9"});
  cachelab::testing::check_error([&] { make("type: diffsparse\ncomputes: 4\n"); }, {"partial-reuse", "--rates"});
  cachelab::testing::check_error([&] { make("type: dp\ncomputes: 4\nkinds: [block]\n"); }, {"no site of kind block"});
  cachelab::testing::check_error([&] { make("type: dp\ncomputes: 0\n"); }, {"computes", ">= 1"});
}

BOOST_AUTO_TEST_SUITE_END()
