// interval_adjust (ERTACache's timestep adjustment): a stand-in whose only error is a wrong
// step length is corrected back onto the uncached trajectory; under FORA the scale is fitted
// on cached steps only; tables are checked; nested correctors are fitted innermost first
// (the calibration chain), and `dec` can calibrate along its own cached trajectory.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/dec.h"
#include "caches/fora.h"
#include "caches/interval_adjust.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "framework/safetensors.h"
#include "tests/caches/fixture.h"

using namespace cachelab;

namespace {

// A stand-in for the whole model on odd steps that is the computed output times `k`: its
// only error is the step length, which the interval scale 1 / k undoes exactly.
class ShortStep final : public CachePolicy {
 public:
  explicit ShortStep(double k) : k_(k) {}
  void begin_run(RunContext&) override {}
  void begin_step(const StepIndex& s) override { odd_ = s.index % 2 == 1; }
  Tensors at(SiteCall& call, const Next& next) override {
    if (!odd_ || call.info->kind != SiteKind::Model) return next(call);
    Tensors out = next(call);
    call.log->computed_fraction = 0;
    call.log->decision = Decision::Reuse;
    out[0] = out[0] * k_;
    return out;
  }

 private:
  double k_;
  bool odd_ = false;
};

struct IaFixture : Fixture {
  cachelab::testing::TempDir dir;
  BuildContext ctx() const { return BuildContext{&model.sites(), nullptr, &model.linears(), &run}; }
  ConfigNode node(const std::string& inner, const std::string& extra = "") const {
    return parse_config_string("type: interval_adjust\ninner: " + inner + "\ntable: " + dir.path +
                                   "/ia.safetensors\n" + extra,
                               "ia.yaml");
  }
  std::string calibrate(SiteLayer& layer, Calibrator& c) {
    return cachelab::testing::calibrate_once(model, sampler, layer, run, &c);
  }
  std::vector<double> table() const {
    auto t = read_safetensors(dir.path + "/ia.safetensors").tensors.at(0).second.to(at::kDouble).contiguous();
    return {t.data_ptr<double>(), t.data_ptr<double>() + t.numel()};
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(interval_adjust, IaFixture)

BOOST_AUTO_TEST_CASE(a_wrong_step_length_is_fitted_and_undone) {
  for (const std::string trajectory : {"cached", "uncached"}) {
    IntervalAdjustOptions o;
    o.table = dir.path + "/ia.safetensors";
    o.trajectory = trajectory;
    IntervalAdjust cal(o, std::make_unique<ShortStep>(0.8));
    BOOST_TEST_MESSAGE(trajectory << ": " << calibrate(cal, cal));
    const auto phi = table();
    BOOST_REQUIRE_EQUAL(phi.size(), 12u);
    for (size_t i = 0; i < phi.size(); ++i)
      BOOST_CHECK_CLOSE(phi[i], i % 2 == 1 ? 1.25 : 1.0, 1e-3);  // 1 / 0.8 on the stood-in steps
    // Applied, the stood-in run is the uncached one again.
    IntervalAdjust fixed(o, std::make_unique<ShortStep>(0.8));
    BOOST_CHECK_LT((with(fixed).samples - ref_traj.samples).abs().max().item<double>(), 1e-4);
    // Without it the run is visibly off.
    ShortStep alone(0.8);
    BOOST_CHECK_GT((with(alone).samples - ref_traj.samples).abs().max().item<double>(), 1e-2);
  }
}

BOOST_AUTO_TEST_CASE(under_fora_only_cached_steps_are_scaled) {
  auto cal = caches().build(node("{type: fora, interval: 3}"), nullptr, ctx());
  BOOST_TEST_MESSAGE(calibrate(*cal, *cal->calibrator()));
  const auto phi = table();
  BOOST_REQUIRE_EQUAL(phi.size(), 12u);
  int scaled = 0;
  for (size_t i = 0; i < phi.size(); ++i) {
    BOOST_CHECK(std::isfinite(phi[i]) && phi[i] >= 0.5 && phi[i] <= 1.5);
    if (i % 3 == 0) BOOST_CHECK_EQUAL(phi[i], 1.0);  // FORA computes every third step
    scaled += phi[i] != 1.0;
  }
  BOOST_CHECK_GT(scaled, 0);
  auto applied = caches().build(node("{type: fora, interval: 3}"), nullptr, ctx());
  auto t = with(*applied);
  int e = -1;
  for (size_t i = 0; i < t.extras.size(); ++i)
    if (t.extras[i].name == "interval_scale") e = int(i);
  BOOST_REQUIRE(e >= 0);
  for (size_t i = 0; i < t.steps.size(); ++i)
    BOOST_CHECK_CLOSE(t.steps[i].site_extra[size_t(e)][size_t(site("model"))], phi[i], 1e-4);
  ForaOptions fo;
  fo.interval = 3;
  ForaPolicy fora(fo);
  auto plain = with(fora);
  BOOST_CHECK_EQUAL(t.flops, plain.flops);
  BOOST_TEST_MESSAGE("final rel-L1 error vs reference: fora " << plain.steps.back().err_ref_rel_l1
                                                              << ", interval_adjust(fora) " << t.steps.back().err_ref_rel_l1);
  // apply: false is FORA bit for bit.
  auto off = caches().build(node("{type: fora, interval: 3}", "apply: false\n"), nullptr, ctx());
  BOOST_CHECK(at::equal(with(*off).samples, plain.samples));
}

BOOST_AUTO_TEST_CASE(tables_and_settings_are_checked) {
  auto missing = caches().build(node("{type: fora}"), nullptr, ctx());
  cachelab::testing::check_error([&] { with(*missing); }, {"no scale table", "cachelab calibrate"});
  write_safetensors(dir.path + "/ia.safetensors", {{"phi", at::ones({12})}}, {{"backbone_digest", "0123456789abcdef"}});
  auto foreign = caches().build(node("{type: fora}"), nullptr, ctx());
  cachelab::testing::check_error([&] { with(*foreign); }, {"digest"});
  write_safetensors(dir.path + "/ia.safetensors", {{"phi", at::ones({7})}}, {{"backbone_digest", ""}});
  auto short_table = caches().build(node("{type: fora}"), nullptr, ctx());
  cachelab::testing::check_error([&] { with(*short_table); }, {"holds 7 steps", "12"});
  cachelab::testing::check_error([&] { caches().resolve(node("{type: fora}", "trajectory: both\n")); },
                                 {"trajectory", "cached"});
  cachelab::testing::check_error([&] { caches().resolve(node("{type: fora}", "clamp: 0\n")); }, {"clamp"});
  cachelab::testing::check_error(
      [] { caches().resolve(parse_config_string("type: interval_adjust\ntable: t\n", "ia.yaml")); }, {"inner"});
  auto resolved = caches().resolve(node("{type: fora}"));
  BOOST_CHECK_EQUAL(to_yaml(caches().resolve(parse_config_string(to_yaml(resolved), "again.yaml"))),
                    to_yaml(resolved));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(calibration_chain, IaFixture)

BOOST_AUTO_TEST_CASE(nested_correctors_are_fitted_innermost_first) {
  const std::string dec = "{type: residual_linear, inner: {type: fora, interval: 3}, table: " + dir.path +
                          "/rl.safetensors}";
  auto layer = caches().build(node(dec), nullptr, ctx());
  std::vector<Calibrator*> chain;
  layer->calibrators(chain);
  BOOST_REQUIRE_EQUAL(chain.size(), 2u);
  BOOST_CHECK_EQUAL(chain[0]->calibration_file(), dir.path + "/rl.safetensors");
  BOOST_CHECK(chain[1] == layer->calibrator());
  // The outer one is held (it must not read its missing table) while the inner is fitted.
  chain[1]->hold(true);
  BOOST_TEST_MESSAGE(calibrate(*layer, *chain[0]));
  chain[1]->hold(false);
  BOOST_TEST_MESSAGE(calibrate(*layer, *chain[1]));
  auto applied = caches().build(node(dec), nullptr, ctx());
  auto t = with(*applied);
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  // Held, the pair is the inner corrector alone.
  auto held = caches().build(node(dec), nullptr, ctx());
  std::vector<Calibrator*> hc;
  held->calibrators(hc);
  hc[1]->hold(true);
  auto inner_only = caches().build(parse_config_string(dec, "rl.yaml"), nullptr, ctx());
  BOOST_CHECK(at::equal(with(*held).samples, with(*inner_only).samples));
}

BOOST_AUTO_TEST_CASE(dec_calibrates_along_either_trajectory) {
  ForaOptions fo;
  fo.interval = 3;
  ForaPolicy fora(fo);
  RunOptions cr = run;
  cr.seed = 11;
  NoCache none{NoCacheOptions{}};
  auto uncached = cachelab::testing::run_image(model, sampler, {&none}, cr, nullptr, nullptr);
  auto cached = cachelab::testing::run_image(model, sampler, {&fora}, cr, nullptr, nullptr);
  for (const std::string trajectory : {"uncached", "cached"}) {
    auto layer = caches().build(parse_config_string("type: dec\ninner: {type: fora, interval: 3}\ntable: " + dir.path +
                                                        "/dec.safetensors\ntrajectory: " + trajectory + "\n",
                                                    "dec.yaml"),
                                nullptr, ctx());
    layer->calibrator()->start_calibration();
    auto t = cachelab::testing::run_image(model, sampler, {layer.get()}, cr, nullptr, nullptr);
    BOOST_TEST_MESSAGE(trajectory << ": " << layer->calibrator()->finish_calibration());
    // The calibration run is the trajectory it names, bit for bit.
    BOOST_CHECK(at::equal(t.samples, trajectory == "cached" ? cached.samples : uncached.samples));
  }
}

BOOST_AUTO_TEST_SUITE_END()
