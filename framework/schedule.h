// Cache schedules: which steps (and which sites) compute, as data a `schedule` policy
// follows, and the optimisers that produce them from a profile. Torch-free.
//
// A schedule file is YAML (schedules/*.yaml), written by `cachelab schedule`:
//   method: dp | uniform | profiled | bac   how it was made
//   steps: 50                           T, the denoising steps it is for
//   compute: [1, 0, 0, 1, ...]          per step: 1 = the cached sites compute, 0 = reuse
//   mask: [[1, 0, ...], ...]            optional [T][S]: per step and cached site (site order)
//   rates: [[1.0, 0.3, ...], ...]       optional [T][S]: the fraction of a token site's tokens
//                                       recomputed (1 = all, 0 = reuse; DiffSparse)
//   backbone_digest: 16 hex digits      of the weights the profile was taken on ("" = any)
//   profile, objective, computes, ...   provenance (ignored when read)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cachelab {

struct Schedule {
  std::string method;
  int steps = 0;
  std::vector<uint8_t> compute;             // [T]
  std::vector<std::vector<uint8_t>> mask;   // [T][S] or empty
  std::vector<std::vector<double>> rates;   // [T][S] token rates or empty
  std::string backbone_digest;
  std::string profile;                      // the profile file it was built from
  double objective = 0;                     // the optimiser's objective at its optimum
  int computes() const;                     // steps with compute = 1
};

// Reads a schedule file; errors name the file and what is wrong.
Schedule load_schedule(const std::string& path);
void save_schedule(const Schedule& s, const std::string& path);

// Contiguous grouping of T steps (CacheQuant's dynamic-programming schedule): split steps
// 0..T-1 into `groups` runs; the first step of a run computes, the others reuse it. The
// cost of a run [j, e] is sum_{u=j+1..e} dist[j][u] (dist[j][u]: the error of reusing
// step j's features at step u > j; entries with u <= j are ignored). Run lengths are in
// [min_len, max_len]. Exact, O(groups T^2). Returns the first step of every run (starts
// with 0) and sets *objective; throws if no grouping meets the bounds.
std::vector<int> dp_group_starts(const std::vector<std::vector<double>>& dist, int groups, int min_len, int max_len,
                                 double* objective = nullptr);

// The cost of a given grouping under the same objective (for comparisons).
double grouping_cost(const std::vector<std::vector<double>>& dist, const std::vector<int>& starts);

// ERTACache-style profiled selection: walk the steps; step u reuses the last computed
// step j while dist[j][u] <= threshold, else computes. The threshold is searched
// (bisection) for the least one that computes at most `computes` steps. Returns the
// computed steps (always starting with 0) and sets *threshold.
std::vector<int> profiled_starts(const std::vector<std::vector<double>>& dist, int computes, double* threshold);

// BAC (Block-wise Adaptive Caching, Ji et al., 2025), our reading. Per site s (in the
// backbone's order), the Adaptive Caching Scheduler picks `computes` update steps by the
// same dynamic programme as dp_group_starts on that site's own distances dist[s] ([T][T]).
// The Bubbling Union then walks the steps: where a downstream FFN site (is_ffn) updates at
// step t, every upstream site whose caching error at t (its distance from its last update to
// t) exceeds its threshold also updates at t, so errors are cut before they enter the FFN.
// A site's threshold is the `quantile` of its own caching errors under its ACS schedule
// (quantile >= 1: no union). Returns the mask [T][S] (1 = compute).
struct BacSchedule {
  std::vector<std::vector<uint8_t>> mask;  // [T][S]
  int acs_computes = 0;                    // update steps per site before the union
  int added = 0;                           // site-steps the union added
  double mean_computes() const;            // computed steps per site, on average
};
BacSchedule bac_schedule(const std::vector<std::vector<std::vector<double>>>& dist, const std::vector<bool>& is_ffn,
                         int computes, double quantile);

// DiffSparse (our reading). A learned cost predictor: per site kind, the error of recomputing
// the fraction r of a site's tokens is e(t, s, r) = e(t, s, 0) (1 - r)^gamma, with gamma fitted
// by least squares on log(e_r / e_0) = gamma log(1 - r) over every measured (t, s, r) of that
// kind (the profile's partial-reuse errors, e_0 its lag-1 reuse error). Returns gamma.
double fit_rate_exponent(const std::vector<double>& rates, const std::vector<double>& error_ratio);

// The rates per (step, site), each from `choices` (ascending, from 0 to 1), that minimise the
// summed predicted error cost[t][s][c] with the mean rate over steps and sites at most
// `budget` (a fraction: K of T steps = K / T). Exact multiple-choice knapsack by dynamic
// programming over the budget in units of the choices' spacing. Step 0 computes in full.
std::vector<std::vector<double>> dp_token_rates(const std::vector<std::vector<std::vector<double>>>& cost,
                                                const std::vector<double>& choices, double budget,
                                                double* objective = nullptr);

// `groups` starts spread evenly over T steps: round(i T / groups).
std::vector<int> uniform_starts(int steps, int groups);

// [T] compute vector from run starts.
std::vector<uint8_t> compute_from_starts(int steps, const std::vector<int>& starts);

}  // namespace cachelab
