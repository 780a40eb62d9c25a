// One method of each family on the Core v2 layers: a forecaster (taylorseer), a tap
// reader (teacache), partial computation (toca) and a nested corrector (dec).
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/dec.h"
#include "caches/fora.h"
#include "caches/taylorseer.h"
#include "caches/teacache.h"
#include "caches/toca.h"
#include "framework/registries.h"
#include "framework/safetensors.h"
#include "tests/caches/fixture.h"

using namespace cachelab;
using cachelab::testing::TempDir;

namespace {

// Max relative deviation of a forecast from the truth.
double rel_err(const at::Tensor& a, const at::Tensor& truth) {
  return ((a - truth).abs().max() / truth.abs().max()).item<double>();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(taylorseer)

BOOST_AUTO_TEST_CASE(newton_forecast_is_exact_on_polynomials_of_degree_up_to_the_order) {
  const cachelab::testing::RandomPolynomial f;
  // Unevenly spaced computed steps (a warm-up step, then interval 4), forecast 3 steps ahead.
  const std::vector<double> steps = {0, 1, 5, 9};
  for (int order = 1; order <= 3; ++order) {
    std::vector<double> s(steps.end() - (order + 1), steps.end());
    for (int degree = 1; degree <= 3; ++degree) {
      std::vector<at::Tensor> v;
      for (double x : s) v.push_back(f(x, degree));
      const double err = rel_err(TaylorSeerPolicy::forecast(s, v, 12, "newton"), f(12, degree));
      if (degree <= order) BOOST_CHECK_MESSAGE(err < 1e-12, "order " << order << " degree " << degree << ": " << err);
      else BOOST_CHECK_MESSAGE(err > 1e-6, "order " << order << " should not be exact at degree " << degree);
    }
  }
}

BOOST_AUTO_TEST_CASE(the_papers_taylor_form_is_exact_for_lines_only) {
  auto c0 = at::randn({4}, at::kDouble), c1 = at::randn({4}, at::kDouble), c2 = at::randn({4}, at::kDouble);
  const std::vector<double> s = {0, 4, 8};
  std::vector<at::Tensor> line, quad;
  for (double x : s) line.push_back(c0 + c1 * x), quad.push_back(c0 + c1 * x + c2 * x * x);
  BOOST_CHECK_LT(rel_err(TaylorSeerPolicy::forecast(s, line, 11, "taylor"), c0 + c1 * 11), 1e-12);
  BOOST_CHECK_GT(rel_err(TaylorSeerPolicy::forecast(s, quad, 11, "taylor"), c0 + c1 * 11 + c2 * 121), 1e-3);
}

BOOST_FIXTURE_TEST_CASE(predicts_between_full_steps_with_foras_flops, Fixture) {
  TaylorSeerOptions o;
  o.interval = 3;
  o.order = 2;
  o.warmup_steps = 0;
  TaylorSeerPolicy ts(o);
  ForaOptions fo;
  fo.interval = 3;
  ForaPolicy fora(fo);
  auto t = with(ts), f = with(fora);
  const int mlp = site("blocks.2.mlp");
  for (size_t i = 0; i < t.steps.size(); ++i)
    BOOST_CHECK_EQUAL(t.steps[i].decision[mlp], uint8_t(i % 3 == 0 ? Decision::Compute : Decision::Predict));
  BOOST_CHECK_EQUAL(t.flops, f.flops);
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  BOOST_TEST_MESSAGE("tiny DiT, interval 3: final rel-L1 error vs reference, taylorseer order 2 "
                     << t.steps.back().err_ref_rel_l1 << ", fora " << f.steps.back().err_ref_rel_l1);
}

BOOST_FIXTURE_TEST_CASE(order_zero_is_fora, Fixture) {
  TaylorSeerOptions o;
  o.interval = 3;
  o.order = 0;
  o.warmup_steps = 0;
  TaylorSeerPolicy ts(o);
  ForaOptions fo;
  fo.interval = 3;
  ForaPolicy fora(fo);
  BOOST_CHECK(at::equal(with(ts).samples, with(fora).samples));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(teacache)

BOOST_AUTO_TEST_CASE(rescaling_polynomial_is_highest_degree_first) {
  TeaCacheOptions o;
  o.coefficients = {2.0, 0.0, 1.0};
  BOOST_CHECK_CLOSE(TeaCachePolicy(o).rescale(3.0), 19.0, 1e-12);
}

BOOST_AUTO_TEST_CASE(polyfit_recovers_a_polynomial) {
  std::vector<double> x, y;
  for (int i = 0; i < 20; ++i) {
    const double v = 0.01 * (i + 1);
    x.push_back(v);
    y.push_back(30 * v * v * v + 2 * v * v - v + 0.5);
  }
  auto c = polyfit(x, y, 3);
  const std::vector<double> want = {30, 2, -1, 0.5};
  for (size_t i = 0; i < 4; ++i) BOOST_CHECK_SMALL(c[i] - want[i], 1e-6 * std::max(1.0, std::abs(want[i])));
}

BOOST_FIXTURE_TEST_CASE(computes_exactly_when_the_accumulated_signal_crosses_the_threshold, Fixture) {
  TeaCacheOptions o;
  o.threshold = 0.15;
  TeaCachePolicy tc(o);
  auto t = with(tc);
  const int body = site("body"), block = site("blocks.0");
  const size_t T = t.steps.size();
  int reused = 0, computed_mid = 0;
  double prev_acc = 0;
  bool prev_reused = false;
  for (size_t i = 0; i < T; ++i) {
    const auto& s = t.steps[i];
    const bool reuse = s.decision[body] == uint8_t(Decision::Reuse);
    if (i == 0 || i == T - 1) {
      BOOST_CHECK_MESSAGE(!reuse, "step " << i << " must compute");
      continue;
    }
    const double acc = s.signal[body];
    BOOST_REQUIRE_MESSAGE(std::isfinite(acc) && acc >= 0, "signal at step " << i << " = " << acc);
    BOOST_CHECK_EQUAL(reuse, acc < o.threshold);
    if (prev_reused) BOOST_CHECK_GT(acc, prev_acc);  // it accumulates while skipping
    if (reuse) BOOST_CHECK_EQUAL(s.decision[block], uint8_t(Decision::Skipped));
    reused += reuse;
    computed_mid += !reuse;
    prev_acc = acc;
    prev_reused = reuse;
  }
  BOOST_TEST_MESSAGE("teacache 0.15 on the tiny DiT: " << reused << " of " << T << " steps skipped");
  BOOST_CHECK_GT(reused, 0);
  BOOST_CHECK_GT(computed_mid, 0);  // it also resets and computes in the middle
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
}

BOOST_FIXTURE_TEST_CASE(zero_threshold_is_the_reference, Fixture) {
  TeaCacheOptions o;
  o.threshold = 0.0;
  TeaCachePolicy tc(o);
  BOOST_CHECK(at::equal(with(tc).samples, ref.samples));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(toca)

BOOST_FIXTURE_TEST_CASE(fresh_ratio_one_is_the_reference_bit_for_bit, Fixture) {
  TocaOptions o;
  o.fresh_ratio = 1.0;
  TocaPolicy tc(o);
  auto t = with(tc);
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
}

BOOST_FIXTURE_TEST_CASE(partial_steps_compute_the_fresh_fraction_and_flops_count_it, Fixture) {
  TocaOptions o;
  o.interval = 3;
  o.fresh_ratio = 0.25;  // 4 of the tiny DiT's 16 tokens
  o.warmup_steps = 0;
  TocaPolicy tc(o);
  auto t = with(tc);
  const int attn = site("blocks.1.attn"), mlp = site("blocks.1.mlp");
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto want = i % 3 == 0 ? Decision::Compute : Decision::Partial;
    BOOST_CHECK_EQUAL(t.steps[i].decision[attn], uint8_t(want));
    BOOST_CHECK_EQUAL(t.steps[i].decision[mlp], uint8_t(want));
    BOOST_REQUIRE_EQUAL(t.extras.size(), size_t(1));
    BOOST_CHECK_CLOSE(t.steps[i].site_extra[0][size_t(mlp)], i % 3 == 0 ? 1.0 : 0.25, 1e-12);
  }
  // Expected FLOPs from the site table: attn/mlp cost fixed + (full - fixed) x 4/16 on 8 of 12 steps.
  double expected = 0;
  for (auto& s : model.sites()) {
    const bool tok = s.kind == SiteKind::Attn || s.kind == SiteKind::Mlp;
    const double partial = s.fixed_flops_per_sample + (s.flops_per_sample - s.fixed_flops_per_sample) * 0.25;
    expected += tok ? 4 * s.flops_per_sample + 8 * partial : 12 * s.flops_per_sample;
  }
  BOOST_CHECK_CLOSE(t.flops, expected * 4 * 2, 1e-9);
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  BOOST_CHECK_GT(t.steps.back().err_ref_rel_l1, 0.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(dec)

BOOST_AUTO_TEST_CASE(fit_affine_recovers_a_and_b) {
  auto gen = at::detail::createCPUGenerator(7);
  auto x = at::randn({4000, 6}, gen, at::kDouble) * 2 + 1;
  auto a = at::tensor({0.5, 1.0, 1.5, -0.7, 2.0, 0.9}, at::kDouble), b = at::tensor({0.1, -0.2, 0.0, 0.3, 1.0, -1.0}, at::kDouble);
  auto y = x * a + b + at::randn({4000, 6}, gen, at::kDouble) * 0.01;
  auto [fa, fb] = fit_affine(x.sum(0), y.sum(0), (x * x).sum(0), (x * y).sum(0), 4000);
  BOOST_CHECK_LT((fa - a).abs().max().item<double>(), 2e-3);
  BOOST_CHECK_LT((fb - b).abs().max().item<double>(), 2e-3);
}

BOOST_FIXTURE_TEST_CASE(residual_linear_fits_one_scalar_pair_per_step_and_site, Fixture) {
  TempDir dir;
  ConfigNode node = parse_config_string(
      "type: residual_linear\ninner: {type: fora, interval: 3}\ntable: " + dir.path + "/rl.safetensors\n", "rl.yaml");
  BOOST_CHECK_EQUAL(caches().resolve(node).find("per")->scalar, "tensor");  // the preset's default
  BuildContext ctx;
  ctx.sites = &model.sites();
  auto cal = caches().build(node, nullptr, ctx);
  BOOST_TEST_MESSAGE(cachelab::testing::calibrate_once(model, sampler, *cal, run));
  auto table = read_safetensors(dir.path + "/rl.safetensors");
  BOOST_REQUIRE(!table.tensors.empty());
  for (auto& [name, t] : table.tensors) {
    BOOST_CHECK_EQUAL(t.numel(), 1);
    BOOST_CHECK(std::isfinite(t.item<double>()));
  }
  auto corrected = caches().build(node, nullptr, ctx);
  auto t = with(*corrected);
  int e = -1;
  for (size_t i = 0; i < t.extras.size(); ++i)
    if (t.extras[i].name == "dec_correction_rel") e = int(i);
  BOOST_REQUIRE(e >= 0);
  double most = 0;
  for (auto& s : t.steps)
    for (double v : s.site_extra[size_t(e)])
      if (std::isfinite(v)) most = std::max(most, v);
  BOOST_CHECK_GT(most, 0);  // the correction really changed stand-ins
  ForaOptions fo;
  fo.interval = 3;
  ForaPolicy fora(fo);
  BOOST_TEST_MESSAGE("final rel-L1 error vs reference: fora " << with(fora).steps.back().err_ref_rel_l1
                                                              << ", residual_linear(fora) " << t.steps.back().err_ref_rel_l1);
}

BOOST_FIXTURE_TEST_CASE(calibrated_correction_reduces_foras_error, Fixture) {
  TempDir dir;
  ConfigNode node = parse_config_string("type: dec\ninner: {type: fora, interval: 3}\ntable: " + dir.path +
                                            "/dec.safetensors\n",
                                        "dec.yaml");
  BuildContext ctx;
  ctx.sites = &model.sites();
  // A missing table is a clear error before anything runs.
  {
    auto layer = caches().build(node, nullptr, ctx);
    cachelab::testing::check_error([&] { with(*layer); }, {"no coefficient table", "cachelab calibrate"});
  }
  // Calibrate on other seeds than the evaluation's.
  auto cal = caches().build(node, nullptr, ctx);
  RunOptions cr = run;
  cr.samples = cr.batch = 8;
  BOOST_TEST_MESSAGE(cachelab::testing::calibrate_once(model, sampler, *cal, cr));

  auto corrected = caches().build(node, nullptr, ctx);
  ForaOptions fo;
  fo.interval = 3;
  ForaPolicy fora(fo);
  auto with_dec = with(*corrected), plain = with(fora);
  BOOST_CHECK_EQUAL(with_dec.flops, plain.flops);
  // A table fitted on other weights is refused.
  auto table = read_safetensors(dir.path + "/dec.safetensors");
  write_safetensors(dir.path + "/dec.safetensors", table.tensors, {{"backbone_digest", "0123456789abcdef"}});
  auto foreign = caches().build(node, nullptr, ctx);
  cachelab::testing::check_error([&] { with(*foreign); }, {"digest", "0123456789abcdef", "cachelab calibrate"});
  const double e_dec = with_dec.steps.back().err_ref_rel_l1, e_fora = plain.steps.back().err_ref_rel_l1;
  BOOST_TEST_MESSAGE("final rel-L1 error vs reference: fora " << e_fora << ", dec(fora) " << e_dec);
  BOOST_CHECK_LT(e_dec, e_fora);
}

BOOST_AUTO_TEST_CASE(nested_component_resolves_with_defaults_and_strict_errors) {
  ConfigNode node = parse_config_string("type: dec\ninner: {type: fora}\ntable: t.safetensors\n", "d.yaml");
  ConfigNode resolved = caches().resolve(node);
  BOOST_CHECK_EQUAL(resolved.find("inner")->find("interval")->scalar, "3");
  BOOST_CHECK_EQUAL(resolved.find("apply")->scalar, "true");
  ConfigNode bad = parse_config_string("type: dec\ninner: {type: fora, intervall: 2}\ntable: t\n", "d.yaml");
  cachelab::testing::check_error([&] { caches().resolve(bad); },
                                 {"d.yaml:2", "inner.intervall", "did you mean `interval`"});
  ConfigNode zero = parse_config_string("type: dec\ninner: {type: fora, interval: 0}\ntable: t\n", "d.yaml");
  cachelab::testing::check_error([&] { caches().resolve(zero); }, {"inner.interval", "must be >= 1"});
}

BOOST_AUTO_TEST_SUITE_END()
