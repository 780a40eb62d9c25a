// The cache zoo, part A: Delta-DiT, DBCache, DBPrune, MagCache, ZEUS, confidence-gated Taylor, the
// step computation mask and the threshold search, each on its defining behaviour (tiny
// synthetic sites where the property is exact, the tiny random DiT for real hits).
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

#include "caches/calibration.h"
#include "caches/cg_taylor.h"
#include "caches/dbcache.h"
#include "caches/dbprune.h"
#include "caches/fbcache.h"
#include "caches/delta_dit.h"
#include "caches/magcache.h"
#include "caches/scm.h"
#include "caches/threshold_search.h"
#include "caches/zeus.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "metrics/functional.h"
#include "tests/caches/fixture.h"

using namespace cachelab;
using cachelab::testing::check_error;
using cachelab::testing::TempDir;

namespace {

// A site table of `depth` main-stream blocks (no children), for calling layers directly.
std::vector<Site> block_sites(int depth) {
  std::vector<Site> s;
  for (int i = 0; i < depth; ++i) s.push_back({"blocks." + std::to_string(i), -1, 1.0, SiteKind::Block, i});
  return s;
}

// Runs one step of `layer` over the block stack, where block b computes f(b, x).
template <class F>
at::Tensor run_stack(SiteLayer& layer, const std::vector<Site>& sites, const StepIndex& step, at::Tensor x, F f,
                     std::vector<Decision>* decisions = nullptr) {
  layer.begin_step(step);
  if (decisions) decisions->clear();
  for (size_t b = 0; b < sites.size(); ++b) {
    SiteLog log;
    log.site = int(b);
    SiteCall call;
    call.site = int(b);
    call.info = &sites[b];
    call.step = &step;
    call.inputs = {x};
    call.log = &log;
    x = layer.at(call, [&](const SiteCall& c) {
      log.computed_fraction += 1.0;
      return Tensors{f(int(b), c.inputs[0])};
    })[0];
    if (decisions) decisions->push_back(log.computed_fraction >= 1 ? Decision::Compute : log.decision);
  }
  return x;
}

StepIndex step_of(int s, int count) {
  StepIndex st;
  st.index = s, st.count = count;
  return st;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(delta_dit)

BOOST_AUTO_TEST_CASE(cached_deviation_plus_new_input_is_the_range_output_when_the_range_is_a_translation) {
  const int depth = 4, T = 8;
  auto sites = block_sites(depth);
  RunContext ctx;
  ctx.sites = &sites;
  ctx.steps = T;
  DeltaDitOptions o;
  o.interval = 2, o.cached_blocks = 2, o.boundary = 0.5, o.warmup_steps = 0;
  DeltaDitPolicy p(o);
  p.begin_run(ctx);
  // Every block adds its own constant: the range [2, 3] is x -> x + c2 + c3.
  auto c = at::randn({depth, 1, 3, 5}, at::kDouble);
  auto f = [&](int b, const at::Tensor& x) { return x + c[b]; };
  std::vector<Decision> d;
  int reused_steps = 0;
  for (int s = 0; s < T; ++s) {
    auto x = at::randn({1, 3, 5}, at::kDouble);  // a new input every step
    auto out = run_stack(p, sites, step_of(s, T), x, f, &d);
    BOOST_CHECK_SMALL((out - (x + c.sum(0))).abs().max().item<double>(), 1e-12);
    const auto [lo, hi] = p.range_at(s, T);
    BOOST_CHECK_EQUAL(lo, s < 4 ? 2 : 0);  // rear blocks in the outline stage, front ones after b
    BOOST_CHECK_EQUAL(hi, s < 4 ? 3 : 1);
    if (d[size_t(lo)] == Decision::Reuse) {
      ++reused_steps;
      for (int b = 0; b < depth; ++b) BOOST_CHECK((d[size_t(b)] == Decision::Reuse) == (b >= lo && b <= hi));
    }
  }
  // Steps 0 and 4 fill the range's Delta, 1 and 5 reuse it, 2 and 6 recompute, 3 and 7 reuse.
  BOOST_CHECK_EQUAL(reused_steps, 4);
}

BOOST_FIXTURE_TEST_CASE(hits_in_a_real_run_and_saves_flops, Fixture) {
  DeltaDitOptions o;
  o.cached_blocks = 2;
  DeltaDitPolicy p(o);
  auto t = with(p);
  const int rear = site("blocks.3"), front = site("blocks.0");
  BOOST_CHECK_GT(count(t, rear, Decision::Reuse), 0);   // early: rear blocks
  BOOST_CHECK_GT(count(t, front, Decision::Reuse), 0);  // late: front blocks
  for (size_t i = 0; i < t.steps.size(); ++i) {
    if (i < 6) BOOST_CHECK_EQUAL(t.steps[i].decision[front], uint8_t(Decision::Compute));
    else BOOST_CHECK_EQUAL(t.steps[i].decision[rear], uint8_t(Decision::Compute));
    const double stage = t.steps[i].signal[site(i < 6 ? "blocks.2" : "blocks.0")];  // the range's first block
    BOOST_CHECK_EQUAL(stage, i < 6 ? 0.0 : 1.0);
  }
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(dbcache)

BOOST_FIXTURE_TEST_CASE(front_and_back_blocks_always_run_the_middle_is_skipped, Fixture) {
  DbCacheOptions o;
  o.threshold = 1e9, o.warmup_steps = 2, o.front_blocks = 1, o.back_blocks = 1, o.max_consecutive = 2;
  DbCachePolicy p(o);
  auto t = with(p);
  int reused = 0;
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto& s = t.steps[i];
    BOOST_CHECK_EQUAL(s.decision[site("blocks.0")], uint8_t(Decision::Compute));
    BOOST_CHECK_EQUAL(s.decision[site("blocks.3")], uint8_t(Decision::Compute));  // Bn = 1
    BOOST_CHECK_EQUAL(s.decision[site("blocks.1")], s.decision[site("blocks.2")]);
    reused += s.decision[site("blocks.1")] == uint8_t(Decision::Reuse);
    if (i >= 1) BOOST_CHECK(std::isfinite(s.signal[site("blocks.1")]));
  }
  BOOST_CHECK_GT(reused, 0);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
}

BOOST_FIXTURE_TEST_CASE(fbcache_is_the_fn1_bn0_preset, Fixture) {
  FbCacheOptions fo;
  fo.threshold = 0.3;
  const DbCacheOptions& d = fo;
  BOOST_CHECK_EQUAL(d.front_blocks, 1);
  BOOST_CHECK_EQUAL(d.back_blocks, 0);
  FbCachePolicy fb(fo);
  DbCachePolicy db(d);
  BOOST_CHECK(at::equal(with(fb).samples, with(db).samples));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(magcache)

BOOST_AUTO_TEST_CASE(resample_nearest_keeps_the_ends) {
  auto r = resample_nearest({1.0, 2.0, 3.0}, 5);
  const std::vector<double> want = {1, 2, 2, 3, 3};  // round(i * 2 / 4): 0, 0.5->1 (lround away), 1, 1.5->2, 2
  BOOST_REQUIRE_EQUAL(r.size(), size_t(5));
  BOOST_CHECK_EQUAL(r[0], 1.0);
  BOOST_CHECK_EQUAL(r[4], 3.0);
  BOOST_CHECK_EQUAL(r[2], 2.0);
}

BOOST_FIXTURE_TEST_CASE(accumulated_error_resets_when_it_recomputes, Fixture) {
  MagCacheOptions o;
  o.ratios.assign(12, 0.9);  // err after k skips: sum_j |1 - 0.9^j| = 0.1, 0.29, 0.561
  o.threshold = 0.35, o.max_skip = 10, o.retention_ratio = 0.0;
  MagCachePolicy p(o);
  auto t = with(p);
  const int body = site("body");
  // Step 0 computes (nothing cached); then R R C repeats: the third skip would reach 0.561.
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto want = i == 0 || i % 3 == 0 ? Decision::Compute : Decision::Reuse;
    BOOST_CHECK_EQUAL(t.steps[i].decision[body], uint8_t(want));
    if (i == 0) continue;
    const double sig = t.steps[i].signal[body];
    const double expect = i % 3 == 1 ? 0.1 : i % 3 == 2 ? 0.1 + 0.19 : 0.1 + 0.19 + 0.271;
    BOOST_CHECK_CLOSE(sig, expect, 1e-9);  // one step after a compute it is |1 - gamma| again
  }
}

BOOST_FIXTURE_TEST_CASE(max_skip_and_retention_hold, Fixture) {
  MagCacheOptions o;
  o.ratios.assign(12, 1.0);  // no error at all: only K and the retention force computation
  o.threshold = 0.1, o.max_skip = 2, o.retention_ratio = 0.25;
  MagCachePolicy p(o);
  auto t = with(p);
  const int body = site("body");
  int run = 0;
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const bool reuse = t.steps[i].decision[body] == uint8_t(Decision::Reuse);
    if (i < 3) BOOST_CHECK(!reuse);  // 25% of 12 steps retained
    run = reuse ? run + 1 : 0;
    BOOST_CHECK_LE(run, 2);
  }
  BOOST_CHECK_EQUAL(count(t, body, Decision::Reuse), 6);  // steps 3..11: R R C R R C R R C -> 6
}

BOOST_FIXTURE_TEST_CASE(calibration_writes_ratios_with_the_digest_and_a_real_run_hits, Fixture) {
  TempDir dir;
  MagCacheOptions o;
  o.calibration = dir.file("mag.txt");
  o.threshold = 0.3;
  MagCachePolicy cal(o);
  cal.start_calibration();
  auto tc = with(cal);
  BOOST_CHECK(at::equal(tc.samples, ref.samples));  // calibration computes everything
  BOOST_TEST_MESSAGE(cal.finish_calibration());
  BOOST_REQUIRE_EQUAL(cal.ratios().size(), size_t(12));
  for (size_t i = 1; i < 12; ++i) BOOST_CHECK(std::isfinite(cal.ratios()[i]) && cal.ratios()[i] > 0);
  MagCachePolicy p(o);  // reads the file
  auto t = with(p);
  const int body = site("body");
  BOOST_CHECK_GT(count(t, body, Decision::Reuse), 0);
  for (size_t i = 3; i < t.steps.size(); ++i) BOOST_CHECK(std::isfinite(t.steps[i].signal[body]));
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  // Another backbone's file (here: a changed digest) is an error.
  std::ifstream in(o.calibration);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  const std::string original = s;
  const auto at_digest = s.find("backbone_digest: ") + 17;
  s[at_digest] = s[at_digest] == '0' ? '1' : '0';
  std::ofstream(o.calibration) << s;
  MagCachePolicy other(o);
  check_error([&] { with(other); }, {"fitted on another backbone", "cachelab calibrate"});
  // A damaged ratio is an error, not a table silently cut short at it.
  std::ofstream(o.calibration) << original.substr(0, original.rfind(' ')) << " 0.9x7\n";
  MagCachePolicy damaged(o);
  check_error([&] { with(damaged); }, {"holds `0.9x7`, not a finite number"});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(zeus)

BOOST_AUTO_TEST_CASE(extrapolation_is_exact_for_an_output_linear_in_the_step) {
  std::vector<Site> sites = {{"model", -1, 1.0, SiteKind::Model}};
  const int T = 20;
  RunContext ctx;
  ctx.sites = &sites;
  ctx.steps = T;
  ZeusOptions o;
  o.mode = "interp_all";
  ZeusPolicy p(o);
  p.begin_run(ctx);
  auto a = at::randn({2, 3}, at::kDouble), b = at::randn({2, 3}, at::kDouble);
  int predicted = 0;
  for (int s = 0; s < T; ++s) {
    std::vector<Decision> d;
    auto out = run_stack(p, sites, step_of(s, T), at::zeros({2, 3}, at::kDouble),
                         [&](int, const at::Tensor&) { return a + b * double(s); }, &d);
    BOOST_CHECK_SMALL((out - (a + b * double(s))).abs().max().item<double>(), 1e-9);
    predicted += d[0] == Decision::Predict;
  }
  BOOST_CHECK_GT(predicted, 5);
}

BOOST_FIXTURE_TEST_CASE(never_extrapolates_twice_in_a_row_and_hits, Fixture) {
  ZeusOptions o;
  o.start = 0.0, o.end = 1.0;  // the whole run, to make the pattern long on 12 steps
  ZeusPolicy p(o);
  auto t = with(p);
  const int model_site = site("model");
  int predicted = 0, reused = 0;
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto d = t.steps[i].decision[model_site];
    if (i > 0) BOOST_CHECK(!(d == uint8_t(Decision::Predict) && t.steps[i - 1].decision[model_site] == d));
    predicted += d == uint8_t(Decision::Predict);
    reused += d == uint8_t(Decision::Reuse);
    if (d != uint8_t(Decision::Compute)) {
      BOOST_CHECK(std::isfinite(t.steps[i].signal[model_site]));
      BOOST_CHECK_EQUAL(t.steps[i].decision[site("blocks.0")], uint8_t(Decision::Skipped));
    }
  }
  BOOST_CHECK_GT(predicted, 0);
  BOOST_CHECK_GT(reused, 0);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  // interp_all does extrapolate back to back on the same pattern (the check above can fail).
  o.mode = "interp_all";
  ZeusPolicy all(o);
  auto ta = with(all);
  int back_to_back = 0;
  for (size_t i = 1; i < ta.steps.size(); ++i)
    back_to_back += ta.steps[i].decision[model_site] == uint8_t(Decision::Predict) &&
                    ta.steps[i - 1].decision[model_site] == uint8_t(Decision::Predict);
  BOOST_CHECK_GT(back_to_back, 0);
}

BOOST_FIXTURE_TEST_CASE(steps_outside_the_window_compute, Fixture) {
  ZeusOptions o;  // window [20%, 90%) of 12 steps: steps 3..10
  ZeusPolicy p(o);
  auto t = with(p);
  const int m = site("model");
  for (size_t i = 0; i < t.steps.size(); ++i)
    if (i < 3 || i >= 11) BOOST_CHECK_EQUAL(t.steps[i].decision[m], uint8_t(Decision::Compute));
  BOOST_CHECK_GT(count(t, m, Decision::Predict), 0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(cg_taylor)

BOOST_FIXTURE_TEST_CASE(first_block_always_runs_last_block_is_forecast_when_the_gate_opens, Fixture) {
  CgTaylorOptions o;
  o.threshold = 1e9, o.warmup_steps = 3, o.max_consecutive = 2;
  CgTaylorPolicy p(o);
  auto t = with(p);
  const int first = site("blocks.0"), mid = site("blocks.1"), last = site("blocks.3");
  int run = 0, forecast = 0;
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto& s = t.steps[i];
    BOOST_CHECK_EQUAL(s.decision[first], uint8_t(Decision::Compute));
    const bool f = s.decision[last] == uint8_t(Decision::Predict);
    if (i < 3) BOOST_CHECK(!f);
    if (f) BOOST_CHECK_EQUAL(s.decision[mid], uint8_t(Decision::Reuse));
    if (i >= 2) BOOST_CHECK_MESSAGE(std::isfinite(s.signal[first]), "gate signal at step " << i);
    run = f ? run + 1 : 0;
    forecast += f;
    BOOST_CHECK_LE(run, 2);
  }
  BOOST_CHECK_GT(forecast, 0);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
}

BOOST_FIXTURE_TEST_CASE(gate_follows_the_first_blocks_forecast_error, Fixture) {
  CgTaylorOptions o;
  o.threshold = 0.2, o.warmup_steps = 2, o.max_consecutive = -1;
  CgTaylorPolicy p(o);
  auto t = with(p);
  const int first = site("blocks.0"), last = site("blocks.3");
  for (size_t i = 2; i < t.steps.size(); ++i) {
    const double e = t.steps[i].signal[first];
    const bool f = t.steps[i].decision[last] == uint8_t(Decision::Predict);
    BOOST_CHECK_EQUAL(f, e < o.threshold);
  }
  CgTaylorOptions z = o;
  z.threshold = 0.0;
  CgTaylorPolicy never(z);
  BOOST_CHECK(at::equal(with(never).samples, ref.samples));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(scm)

BOOST_AUTO_TEST_CASE(presets_compute_the_start_and_the_end_and_get_sparser) {
  int prev = 1 << 30;
  for (const char* name : {"slow", "medium", "fast", "ultra"}) {
    auto m = scm_preset(name, 50);
    BOOST_REQUIRE_EQUAL(m.size(), size_t(50));
    BOOST_CHECK_EQUAL(m[0], 1);
    BOOST_CHECK_EQUAL(m[4], 1);  // every preset computes at least the first 10% (5 steps)
    BOOST_CHECK_EQUAL(m.back(), 1);
    int ones = 0;
    for (int v : m) ones += v;
    BOOST_TEST_MESSAGE("scm " << name << ": " << ones << " of 50 steps computed");
    BOOST_CHECK_LT(ones, prev);
    prev = ones;
  }
}

BOOST_FIXTURE_TEST_CASE(alone_it_reuses_the_body_exactly_on_the_zero_steps, Fixture) {
  ScmOptions o;
  o.mask = {1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1};
  BuildContext bc;
  ScmPolicy p(o, bc);
  auto t = with(p);
  const int body = site("body");
  for (size_t i = 0; i < t.steps.size(); ++i) {
    BOOST_CHECK_EQUAL(t.steps[i].decision[body], uint8_t(o.mask[i] ? Decision::Compute : Decision::Reuse));
    BOOST_CHECK(std::isfinite(t.steps[i].signal[body]));
  }
}

BOOST_FIXTURE_TEST_CASE(around_a_dynamic_policy_the_one_steps_are_forced, Fixture) {
  ScmOptions o;
  o.mask = {1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  o.inner.node = parse_config_string("type: fbcache\nthreshold: 1e9\nwarmup_steps: 0\nmax_consecutive: -1\n", "t");
  BuildContext bc;
  ScmPolicy p(o, bc);
  auto t = with(p);
  const int mid = site("blocks.2");
  for (size_t i = 0; i < t.steps.size(); ++i)
    if (o.mask[i]) BOOST_CHECK_EQUAL(t.steps[i].decision[mid], uint8_t(Decision::Compute));
    else BOOST_CHECK_EQUAL(t.steps[i].decision[mid], uint8_t(Decision::Reuse));  // the inner policy's answer
  ScmOptions bad = o;
  bad.mask = {1, 0, 1};
  ScmPolicy wrong(bad, bc);
  check_error([&] { with(wrong); }, {"scm", "3 entries", "12 denoising steps"});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(threshold_search)

BOOST_AUTO_TEST_CASE(choose_keeps_the_best_point_that_reaches_the_target) {
  // A non-monotone curve: 0.3 is faster than 0.4.
  std::vector<ThresholdSearch::Point> c = {
      {0.1, 1.2, 40}, {0.2, 1.6, 35}, {0.3, 2.2, 30}, {0.4, 2.1, 31}, {0.5, 3.0, 20}};
  bool reached = false;
  auto p = ThresholdSearch::choose(c, "flops_speedup", 2.0, &reached);
  BOOST_CHECK(reached);
  BOOST_CHECK_EQUAL(p.threshold, 0.4);  // reaches 2x with the best PSNR
  p = ThresholdSearch::choose(c, "psnr", 30.5, &reached);
  BOOST_CHECK(reached);
  BOOST_CHECK_EQUAL(p.threshold, 0.4);  // >= 30.5 dB with the best speedup
  p = ThresholdSearch::choose(c, "flops_speedup", 5.0, &reached);
  BOOST_CHECK(!reached);
  BOOST_CHECK_EQUAL(p.threshold, 0.5);
}

BOOST_FIXTURE_TEST_CASE(the_searched_threshold_reaches_the_requested_flops_speedup, Fixture) {
  TempDir dir;
  ThresholdSearchOptions o;
  o.inner.node = parse_config_string("type: dbcache\nfront_blocks: 1\nback_blocks: 0\nwarmup_steps: 1\n", "t");
  o.target = "flops_speedup", o.value = 1.5, o.lo = 0.0, o.hi = 2.0, o.grid = 4, o.refine = 3;
  o.file = dir.file("search.txt");
  BuildContext bc;
  bc.sites = &model.sites();
  ThresholdSearch s(o, bc);
  s.start_calibration();
  int runs = 0;
  for (bool more = true; more; ++runs) {
    auto t = with(s);
    if (runs == 0) BOOST_CHECK(at::equal(t.samples, ref.samples));  // the search's own reference
    more = s.another_run(t.flops, t.samples);
  }
  BOOST_CHECK_GE(runs, 1 + o.grid);
  BOOST_CHECK_LE(runs, 1 + o.grid + o.refine);
  const std::string msg = s.finish_calibration();
  BOOST_TEST_MESSAGE(msg);
  BOOST_CHECK(msg.find("NOT reached") == std::string::npos);
  // A fresh component reads the file and, run again, reaches the requested speedup.
  ThresholdSearch again(o, bc);
  auto t = with(again);
  BOOST_CHECK_CLOSE(again.threshold(), s.threshold(), 1e-6);
  BOOST_CHECK_GE(ref_traj.flops / t.flops, o.value);
  BOOST_CHECK_GT(count(t, site("blocks.1"), Decision::Reuse), 0);
}

BOOST_FIXTURE_TEST_CASE(a_psnr_target_keeps_the_fastest_threshold_that_reaches_it, Fixture) {
  // The PSNR at the fastest end of the interval, then a target 3 dB above it: threshold 0
  // (everything computed, PSNR inf) reaches it, the fastest end does not.
  const char* inner = "type: dbcache\nfront_blocks: 1\nback_blocks: 0\nwarmup_steps: 1\n";
  DbCacheOptions fast;
  fast.threshold = 2.0, fast.front_blocks = 1, fast.back_blocks = 0, fast.warmup_steps = 1;
  DbCachePolicy fastest(fast);
  const double psnr_fast = psnr(with(fastest).samples, ref.samples);
  BOOST_REQUIRE(std::isfinite(psnr_fast));
  TempDir dir;
  ThresholdSearchOptions o;
  o.inner.node = parse_config_string(inner, "t");
  o.target = "psnr", o.value = psnr_fast + 3.0, o.lo = 0.0, o.hi = 2.0, o.grid = 4, o.refine = 3;
  o.file = dir.file("psnr.txt");
  BuildContext bc;
  ThresholdSearch s(o, bc);
  s.start_calibration();
  for (bool more = true; more;) {
    auto t = with(s);
    more = s.another_run(t.flops, t.samples);
  }
  const std::string msg = s.finish_calibration();
  BOOST_TEST_MESSAGE(msg);
  BOOST_REQUIRE(msg.find("NOT reached") == std::string::npos);
  ThresholdSearch again(o, bc);
  auto t = with(again);
  BOOST_CHECK_GE(psnr(t.samples, ref.samples), o.value);
  BOOST_TEST_MESSAGE("psnr target " << o.value << " dB: threshold " << s.threshold() << ", speedup "
                                    << ref_traj.flops / t.flops);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(dbprune)

BOOST_FIXTURE_TEST_CASE(front_and_back_blocks_run_the_middle_ones_are_pruned, Fixture) {
  DbPruneOptions o;
  o.threshold = 1e9, o.warmup_steps = 2, o.front_blocks = 1, o.back_blocks = 1;
  DbPrunePolicy p(o);
  auto t = with(p);
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto& s = t.steps[i];
    BOOST_CHECK_EQUAL(s.decision[site("blocks.0")], uint8_t(Decision::Compute));
    BOOST_CHECK_EQUAL(s.decision[site("blocks.3")], uint8_t(Decision::Compute));
    for (const char* b : {"blocks.1", "blocks.2"}) {
      BOOST_CHECK_EQUAL(s.decision[site(b)], uint8_t(i < 2 ? Decision::Compute : Decision::Reuse));
      if (i >= 1) BOOST_CHECK(std::isfinite(s.signal[site(b)]));
    }
  }
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
}

BOOST_FIXTURE_TEST_CASE(a_zero_threshold_prunes_nothing_and_the_cap_holds, Fixture) {
  DbPruneOptions o;
  o.threshold = 0;
  DbPrunePolicy none(o);
  auto t = with(none);
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
  o.threshold = 1e9, o.warmup_steps = 1, o.max_pruned_steps = 3;
  DbPrunePolicy capped(o);
  auto c = with(capped);
  int steps_with_a_prune = 0;
  for (auto& s : c.steps) {
    bool any = false;
    for (auto d : s.decision) any |= d == uint8_t(Decision::Reuse);
    steps_with_a_prune += any;
  }
  BOOST_CHECK_EQUAL(steps_with_a_prune, 3);
}

BOOST_AUTO_TEST_CASE(a_pruned_block_adds_the_residual_of_its_last_run_and_decides_alone) {
  // Every block adds its own constant, so a pruned block's stand-in (input + the residual of
  // its last run) is its true output whatever the input: the stack's output stays x + sum c.
  const int depth = 4, T = 8;
  auto sites = block_sites(depth);
  RunContext ctx;
  ctx.sites = &sites;
  ctx.steps = T;
  DbPruneOptions o;
  o.threshold = 1e9, o.warmup_steps = 2, o.front_blocks = 1, o.back_blocks = 1;
  DbPrunePolicy p(o);
  p.begin_run(ctx);
  auto c = at::randn({depth, 1, 3, 5}, at::kDouble);
  auto f = [&](int b, const at::Tensor& x) { return x + c[b]; };
  std::vector<Decision> d;
  for (int s = 0; s < T; ++s) {
    auto x = at::randn({1, 3, 5}, at::kDouble);
    auto out = run_stack(p, sites, step_of(s, T), x, f, &d);
    BOOST_CHECK_SMALL((out - (x + c.sum(0))).abs().max().item<double>(), 1e-12);
    for (int b = 0; b < depth; ++b)
      BOOST_CHECK((d[size_t(b)] == Decision::Reuse) == (s >= 2 && b >= 1 && b <= 2));
  }
  // Per block: when block 1 adds a large constant, block 2's input barely changes relative to
  // its size while block 1's does; at threshold 0.1 block 2 is pruned at every step after the
  // first while block 1, before it, runs.
  c[1].fill_(100.0);
  DbPruneOptions per = o;
  per.threshold = 0.1, per.warmup_steps = 1;
  DbPrunePolicy q1(per);
  q1.begin_run(ctx);
  for (int s = 0; s < T; ++s) {
    auto x = at::randn({1, 3, 5}, at::kDouble);
    auto out = run_stack(q1, sites, step_of(s, T), x, f, &d);
    BOOST_CHECK_SMALL((out - (x + c.sum(0))).abs().max().item<double>(), 1e-9);
    BOOST_CHECK(d[1] == Decision::Compute);
    BOOST_CHECK((d[2] == Decision::Reuse) == (s >= 1));
  }
  DbPruneOptions bad;
  bad.front_blocks = 2, bad.back_blocks = 2;
  DbPrunePolicy q(bad);
  check_error([&] { q.begin_run(ctx); }, {"dbprune", "leave no block to prune", "4-block"});
}

BOOST_AUTO_TEST_SUITE_END()
