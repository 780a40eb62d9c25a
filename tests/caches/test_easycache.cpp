// EasyCache and UCache (caches/easycache.h), Spectrum (caches/spectrum.h): each rule checked
// step by step against what the model site saw and answered.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <vector>

#include "caches/easycache.h"
#include "caches/spectrum.h"
#include "framework/registry.h"
#include "tests/caches/fixture.h"

using namespace cachelab;

namespace {
// Outside the cache: records, per step, the model site's input and the output it was given.
struct Probe final : SiteLayer {
  int site = -1;
  std::vector<at::Tensor> x, y;
  void begin_run(RunContext& ctx) override {
    for (size_t i = 0; i < ctx.sites->size(); ++i)
      if ((*ctx.sites)[i].kind == SiteKind::Model) site = int(i);
    x.clear(), y.clear();
  }
  Tensors at(SiteCall& call, const Next& next) override {
    Tensors out = next(call);
    if (call.site == site) x.push_back(call.inputs[0].clone()), y.push_back(out[0].clone());
    return out;
  }
};
double mean_abs(const at::Tensor& t) { return t.abs().mean().item<double>(); }
}  // namespace

BOOST_AUTO_TEST_SUITE(easycache)

BOOST_FIXTURE_TEST_CASE(each_step_follows_the_accumulated_rate_rule, Fixture) {
  EasyCacheOptions o;
  o.threshold = 0.3, o.warmup_steps = 2;
  EasyCachePolicy p(o);
  Probe probe;
  auto t = cachelab::testing::run_image(model, sampler, {&probe, &p}, run, &ref, nullptr);
  const int m = site("model");
  const size_t T = t.steps.size();
  BOOST_REQUIRE_EQUAL(probe.x.size(), T);
  int reused = 0, c = -1, c_before = -1;  // the last two computed steps
  double k = NAN, acc = 0;
  for (size_t i = 0; i < T; ++i) {
    const bool reuse = t.steps[i].decision[m] == uint8_t(Decision::Reuse);
    const bool edge = int(i) < o.warmup_steps || i + 1 == T || std::isnan(k);
    if (!edge) {
      acc += k * mean_abs(probe.x[i] - probe.x[i - 1]) / mean_abs(probe.y[size_t(c)]);
      BOOST_CHECK_CLOSE(t.steps[i].signal[m], acc, 1e-4);
      BOOST_CHECK_EQUAL(reuse, acc < o.threshold);
    } else {
      BOOST_CHECK_MESSAGE(!reuse, "step " << i << " must compute");
    }
    if (reuse) {  // the cached transformation on the current input
      ++reused;
      BOOST_CHECK(at::allclose(probe.y[i], probe.x[i] + probe.y[size_t(c)] - probe.x[size_t(c)], 1e-5, 1e-6));
      continue;
    }
    acc = 0;
    c_before = c, c = int(i);
    if (c_before >= 0)
      k = mean_abs(probe.y[i] - probe.y[size_t(c_before)]) / mean_abs(probe.x[i] - probe.x[size_t(c_before)]);
  }
  BOOST_TEST_MESSAGE("easycache at 0.3: " << reused << " of " << T << " steps reused, last rate " << p.rate());
  BOOST_CHECK_GT(reused, 0);
  BOOST_CHECK_CLOSE(p.rate(), k, 1e-4);
  BOOST_CHECK_GT(t.flops, 0.0);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
}

BOOST_FIXTURE_TEST_CASE(threshold_zero_is_the_uncached_run_and_a_larger_one_reuses_more, Fixture) {
  EasyCacheOptions o;
  o.threshold = 0, o.warmup_steps = 0;
  EasyCachePolicy none(o);
  BOOST_CHECK(at::equal(with(none).samples, ref_traj.samples));
  int last = -1;
  for (double th : {0.05, 0.3, 1.0}) {
    o.threshold = th;
    EasyCachePolicy p(o);
    const int reused = count(with(p), site("model"), Decision::Reuse);
    BOOST_CHECK_GE(reused, last);
    last = reused;
  }
  BOOST_CHECK_GT(last, 0);
}

BOOST_FIXTURE_TEST_CASE(the_block_stack_variant_and_its_errors, Fixture) {
  EasyCacheOptions o;
  o.threshold = 0.3, o.warmup_steps = 2, o.site = "body";
  EasyCachePolicy p(o);
  const auto t = with(p);
  BOOST_CHECK_GT(count(t, site("body"), Decision::Reuse), 0);
  BOOST_CHECK_EQUAL(count(t, site("model"), Decision::Reuse), 0);
  cachelab::testing::check_error(
      [] { read_checked<EasyCacheOptions>(parse_config_string("site: blocks\n", "e.yaml"), "cache `easycache`"); },
      {"site", "model", "body"});
}

// UCache: the input change is measured from the last computed step, the accumulated change
// decays, the threshold is relative to the window's first output and halved (adaptive), and
// steps outside the window compute without touching the state.
BOOST_FIXTURE_TEST_CASE(ucache_follows_its_windowed_relative_rule, Fixture) {
  UCacheOptions o;
  o.threshold = 2.0, o.start = 0.2, o.end = 0.9, o.decay = 0.8;
  UCachePolicy p(o);
  Probe probe;
  auto t = cachelab::testing::run_image(model, sampler, {&probe, &p}, run, &ref, nullptr);
  const int m = site("model");
  const int T = int(t.steps.size()), first = int(o.start * T), last = int(o.end * T);
  int c = -1, reused = 0;
  double k = NAN, acc = 0, ref_norm = 0;
  for (int i = 0; i < T; ++i) {
    const bool reuse = t.steps[size_t(i)].decision[m] == uint8_t(Decision::Reuse);
    if (i < first || i >= last) {
      BOOST_CHECK_MESSAGE(!reuse, "step " << i << " is outside the window");
      continue;
    }
    double dx = NAN;
    bool decided = false;
    if (c >= 0) {
      dx = mean_abs(probe.x[size_t(i)] - probe.x[size_t(c)]);
      if (!std::isnan(k) && dx > 0) {
        acc = acc * o.decay + k * dx / mean_abs(probe.y[size_t(c)]);
        BOOST_CHECK_CLOSE(t.steps[size_t(i)].signal[m], acc, 1e-4);
        decided = true;
        BOOST_CHECK_EQUAL(reuse, acc < o.threshold * 0.5 * ref_norm);
      }
    }
    if (!decided) BOOST_CHECK(!reuse);
    if (reuse) {
      ++reused;
      BOOST_CHECK(at::allclose(probe.y[size_t(i)], probe.x[size_t(i)] + probe.y[size_t(c)] - probe.x[size_t(c)], 1e-5, 1e-6));
      continue;
    }
    if (decided) acc = 0;
    if (c >= 0 && dx > 0) k = mean_abs(probe.y[size_t(i)] - probe.y[size_t(c)]) / dx;
    if (ref_norm == 0) ref_norm = mean_abs(probe.y[size_t(i)]);
    c = i;
  }
  BOOST_TEST_MESSAGE("ucache at 2.0: " << reused << " of " << T << " steps reused");
  BOOST_CHECK_GT(reused, 0);
}

// Spectrum: forecast steps follow the growing window, and a forecast is (1 - w) Taylor + w x
// the ridge-regressed Chebyshev value, here recomputed from the computed outputs by an
// independent route (least squares on the ridge-augmented system).
BOOST_FIXTURE_TEST_CASE(spectrum_forecasts_follow_the_window_and_the_blend, Fixture) {
  SpectrumOptions o;
  o.warmup = 2, o.window = 2, o.flex = 0.5, o.stop = 0.95, o.m = 2, o.lam = 0.5, o.w = 0.4;
  SpectrumPolicy p(o);
  Probe probe;
  auto t = cachelab::testing::run_image(model, sampler, {&probe, &p}, run, &ref, nullptr);
  const int m = site("model"), T = int(t.steps.size());
  std::vector<int> computed;
  double ws = o.window;
  int since = 0, forecasts = 0;
  for (int i = 0; i < T; ++i) {
    const bool pred = t.steps[size_t(i)].decision[m] == uint8_t(Decision::Predict);
    const bool want = i >= o.warmup && i < int(o.stop * T) && computed.size() >= 2 &&
                      (since + 1) % std::max(1, int(std::floor(ws))) != 0;
    BOOST_CHECK_MESSAGE(pred == want, "step " << i);
    if (!pred) {
      computed.push_back(i);
      if (i >= o.warmup) ws += o.flex;
      since = 0;
      continue;
    }
    ++since, ++forecasts;
    // The history: the last max(m + 1, 6) computed steps.
    std::vector<int> h(computed.end() - std::min<long>(long(computed.size()), 6), computed.end());
    const int K = int(h.size()), M = o.m + 1;
    auto A = at::zeros({K + M, M}, at::kDouble), Y = at::zeros({K + M, probe.y[0].numel()}, at::kDouble);
    auto cheb = [&](double tau) {
      std::vector<double> b = {1, tau};
      for (int j = 2; j < M; ++j) b.push_back(2 * tau * b[size_t(j) - 1] - b[size_t(j) - 2]);
      return b;
    };
    for (int k = 0; k < K; ++k) {
      const auto b = cheb(2.0 * h[size_t(k)] / T - 1);
      for (int j = 0; j < M; ++j) A[k][j] = b[size_t(j)];
      Y[k] = probe.y[size_t(h[size_t(k)])].reshape({-1}).to(at::kDouble);
    }
    for (int j = 0; j < M; ++j) A[K + j][j] = std::sqrt(o.lam);
    const auto coef = std::get<0>(at::linalg_lstsq(A, Y));
    const auto xs = at::tensor(cheb(2.0 * i / T - 1), at::kDouble).reshape({1, M});
    const auto c = xs.mm(coef).reshape(probe.y[0].sizes());
    const auto& last = probe.y[size_t(h.back())];
    const auto& prev = probe.y[size_t(h[h.size() - 2])];
    const auto want_y = (1 - o.w) * (last + 0.5 * (last - prev)).to(at::kDouble) + o.w * c;
    BOOST_CHECK_MESSAGE(at::allclose(probe.y[size_t(i)].to(at::kDouble), want_y, 1e-4, 1e-5),
                        "step " << i << ": " << (probe.y[size_t(i)].to(at::kDouble) - want_y).abs().max().item<double>());
  }
  BOOST_TEST_MESSAGE("spectrum: " << forecasts << " of " << T << " steps forecast");
  BOOST_CHECK_GT(forecasts, 0);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
}

BOOST_AUTO_TEST_SUITE_END()
