// FasterCache (caches/fastercache.h) on the tiny guided DiT. What it must show: inside its
// window an attention site alternates computed and extrapolated outputs, each estimate being
// o1 + w (o1 - o0) of the two outputs before it; CFG-Cache runs the conditional half alone at
// the evaluations its interval leaves out, and its estimate scales the unconditional-minus-
// conditional difference by band (a constant difference is all low frequency, the Nyquist
// checkerboard all high), compounding over consecutive skips; `reuse` returns the last
// unconditional output; the whole run saves FLOPs with a finite error; bad settings are refused.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <vector>

#include "caches/fastercache.h"
#include "framework/registries.h"
#include "tests/caches/fixture.h"

using namespace cachelab;

namespace {

double rel_err(const Trajectory& t, const Trajectory& ref) {
  return (t.samples - ref.samples).abs().sum().item<double>() / ref.samples.abs().sum().item<double>();
}

// Outside the cache: every site's output per call, and the model site's batch per evaluation.
struct Recorder final : SiteLayer {
  int model = -1;
  std::vector<std::vector<at::Tensor>> out;  // per site, per call
  std::vector<int64_t> batch;                // model site: rows per evaluation
  void begin_run(RunContext& ctx) override {
    out.assign(ctx.sites->size(), {});
    for (size_t i = 0; i < ctx.sites->size(); ++i)
      if ((*ctx.sites)[i].kind == SiteKind::Model) model = int(i);
    batch.clear();
  }
  Tensors at(SiteCall& call, const Next& next) override {
    Tensors o = next(call);
    out[size_t(call.site)].push_back(o[0].clone());
    if (call.site == model) batch.push_back(call.inputs[0].size(0));
    return o;
  }
};

FasterCacheOptions everywhere() {
  FasterCacheOptions o;
  o.attention_window = {-1, 2000};
  o.uncond_window = {-1, 2000};
  o.low_freq_window = {-1, 2000};
  o.high_freq_window = {-1, 2000};
  return o;
}

// A policy bound to a site table with one attention site, at timestep t.
struct Bound {
  std::vector<Site> sites{{"model", -1, 1.0, SiteKind::Model}, {"attn", 0, 1.0, SiteKind::Attn}};
  RunContext ctx;
  FasterCachePolicy p;
  explicit Bound(const FasterCacheOptions& o) : p(o) {
    ctx.sites = &sites;
    ctx.steps = 10;
    p.begin_run(ctx);
  }
  void step(int i, int64_t t) { p.begin_step({i, 10, 0, i, 10, t}); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(fastercache)

BOOST_FIXTURE_TEST_CASE(attention_alternates_computed_and_extrapolated_outputs, Fixture) {
  FasterCacheOptions o = everywhere();
  o.uncond_interval = 1;  // CFG-Cache off: every evaluation runs both halves
  o.attention_weight = 0.5;
  FasterCachePolicy p(o);
  Recorder rec;
  auto t = cachelab::testing::run_image(model, sampler, {&rec, &p}, run, &ref, nullptr);
  const int a = site("blocks.1.attn");
  BOOST_REQUIRE(a >= 0);
  const auto& out = rec.out[size_t(a)];
  BOOST_REQUIRE_EQUAL(out.size(), t.steps.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const bool predicted = t.steps[i].decision[a] == uint8_t(Decision::Predict);
    BOOST_CHECK_EQUAL(predicted, i % 2 == 1);
    if (predicted) {
      auto want = out[i - 1] + 0.5 * (out[i - 1] - (i >= 2 ? out[i - 2] : out[i - 1]));
      BOOST_CHECK_MESSAGE(at::allclose(out[i], want, 1e-5, 1e-6), "step " << i);
    }
  }
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  const double e = rel_err(t, ref_traj);
  BOOST_CHECK(std::isfinite(e) && e > 0);
  // With weight 0 the estimate is the last output: plain reuse.
  o.attention_weight = 0;
  FasterCachePolicy reuse(o);
  Recorder r0;
  auto t0 = cachelab::testing::run_image(model, sampler, {&r0, &reuse}, run, &ref, nullptr);
  BOOST_CHECK(at::equal(r0.out[size_t(a)][1], r0.out[size_t(a)][0]));
  BOOST_TEST_MESSAGE("fastercache attention only: FLOPs x " << ref_traj.flops / t.flops << ", error " << e
                                                           << " (w 0.5), " << rel_err(t0, ref_traj) << " (w 0)");
}

BOOST_FIXTURE_TEST_CASE(cfg_cache_runs_the_conditional_half_alone_between_full_evaluations, Fixture) {
  FasterCacheOptions o = everywhere();
  o.attention_interval = 1;  // attention always computed
  o.uncond_interval = 3;
  FasterCachePolicy p(o);
  Recorder rec;
  auto t = cachelab::testing::run_image(model, sampler, {&rec, &p}, run, &ref, nullptr);
  BOOST_REQUIRE_EQUAL(rec.batch.size(), t.steps.size());
  for (size_t i = 0; i < rec.batch.size(); ++i)
    BOOST_CHECK_EQUAL(rec.batch[i], i % 3 == 0 ? 2 * run.batch : run.batch);
  // 12 evaluations, 4 of them with both halves: 16 of 24 half-batch forwards.
  BOOST_CHECK_CLOSE(t.flops / ref_traj.flops, 16.0 / 24.0, 1e-6);
  const double e = rel_err(t, ref_traj);
  BOOST_CHECK(std::isfinite(e) && e > 0);
}

BOOST_AUTO_TEST_CASE(the_estimate_scales_each_band_and_compounds_over_skips) {
  FasterCacheOptions o = everywhere();
  o.uncond_interval = 4;
  o.alpha_low = 2.0, o.alpha_high = 3.0;
  o.low_freq_window = {500, 1000}, o.high_freq_window = {-1, 100};
  Bound b(o);
  GuidanceCache& g = b.p;
  // A difference of a constant (DC, low band) plus the Nyquist checkerboard (high band).
  const int64_t H = 8, W = 8;
  auto ij = at::arange(H).unsqueeze(1) + at::arange(W).unsqueeze(0);
  auto checker = (1 - 2 * (ij % 2)).to(at::kFloat).view({1, 1, H, W});
  auto c0 = at::randn({2, 3, H, W}), u0 = c0 + 0.7 + 0.2 * checker;
  b.step(0, 900);
  BOOST_CHECK(!g.skip_unconditional());  // the first evaluation runs both halves
  g.observe(c0, u0);
  auto c1 = at::randn({2, 3, H, W});
  auto want = [&](double low, double high) { return c1 + low * 0.7 + high * 0.2 * checker; };
  b.step(1, 880);  // inside the low band's window only
  BOOST_REQUIRE(g.skip_unconditional());
  BOOST_CHECK(at::allclose(g.estimate_unconditional(c1), want(2, 1), 1e-5, 1e-5));
  b.step(2, 860);  // compounding
  BOOST_REQUIRE(g.skip_unconditional());
  BOOST_CHECK(at::allclose(g.estimate_unconditional(c1), want(4, 1), 1e-5, 1e-5));
  b.step(3, 50);  // inside the high band's window only
  BOOST_REQUIRE(g.skip_unconditional());
  BOOST_CHECK(at::allclose(g.estimate_unconditional(c1), want(4, 3), 1e-5, 1e-5));
  b.step(4, 40);
  BOOST_CHECK(!g.skip_unconditional());  // every 4th evaluation runs both halves
  // The disc: radius floor(0.2 x 8) = 1 around the centre (4, 4) of the shifted spectrum.
  auto band = b.p.low_band(H, W);
  BOOST_CHECK_EQUAL(band.sum().item<int64_t>(), 5);
  BOOST_CHECK(band[4][4].item<bool>() && band[3][4].item<bool>() && !band[3][3].item<bool>());
  // reuse: the last full evaluation's unconditional output as it was.
  o.uncond_estimate = "reuse";
  Bound r(o);
  GuidanceCache& gr = r.p;
  r.step(0, 900);
  BOOST_CHECK(!gr.skip_unconditional());
  gr.observe(c0, u0);
  r.step(1, 880);
  BOOST_REQUIRE(gr.skip_unconditional());
  BOOST_CHECK(at::equal(gr.estimate_unconditional(c1), u0));
}

BOOST_AUTO_TEST_CASE(bad_settings_are_refused_and_good_ones_round_trip) {
  auto bad = [](const std::string& y, std::initializer_list<std::string> words) {
    cachelab::testing::check_error([&] { caches().resolve(parse_config_string(y, "exp.yaml")); }, words);
  };
  bad("type: fastercache\nattention_interval: 0\n", {"attention_interval", ">= 1"});
  bad("type: fastercache\nuncond_window: [641, -1]\n", {"uncond_window", "lo < hi"});
  bad("type: fastercache\nuncond_estimate: stale\n", {"uncond_estimate", "frequency"});
  bad("type: fastercache\nlow_freq_radius: 2\n", {"low_freq_radius"});
  auto node = caches().resolve(parse_config_string("type: fastercache\nattention_weight: 0.3\nuncond_interval: 4\n", "exp.yaml"));
  BOOST_CHECK(caches().build(node) != nullptr);
}

BOOST_AUTO_TEST_SUITE_END()
