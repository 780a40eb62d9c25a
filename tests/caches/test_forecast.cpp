// Forecasters on top of any policy (caches/forecast.h) on the tiny random DiT: around FORA the
// TaylorSeer forecaster is the TaylorSeer policy and the FoCa forecaster the FoCa policy,
// sample for sample; around DBCache the middle blocks' stand-ins become forecasts of their own
// residuals at the same FLOPs, and the result differs from DBCache's; a wrapper without an
// inner policy is refused.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/dbcache.h"
#include "caches/foca.h"
#include "caches/forecast.h"
#include "caches/taylorseer.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "tests/caches/fixture.h"

using namespace cachelab;
using cachelab::testing::check_error;

namespace {

ForecastOptions around(const std::string& inner, const std::string& forecaster) {
  register_all();
  ForecastOptions o;
  o.inner.node = parse_config_string(inner, "inner.yaml");
  o.forecaster = forecaster;
  return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(forecast)

BOOST_FIXTURE_TEST_CASE(around_fora_the_forecasters_are_taylorseer_and_foca, Fixture) {
  ForecastLayer taylor(around("type: fora\ninterval: 3\nwarmup_steps: 1\n", "taylorseer"), BuildContext{});
  TaylorSeerOptions to;
  to.interval = 3, to.order = 2, to.warmup_steps = 1;
  TaylorSeerPolicy ts(to);
  auto a = with(taylor), b = with(ts);
  BOOST_CHECK(at::equal(a.samples, b.samples));
  BOOST_CHECK_EQUAL(a.flops, b.flops);
  BOOST_CHECK_EQUAL(count(a, site("blocks.0.attn"), Decision::Predict), count(b, site("blocks.0.attn"), Decision::Predict));
  BOOST_CHECK_GT(count(a, site("blocks.0.attn"), Decision::Predict), 0);
  ForecastLayer foca(around("type: fora\ninterval: 3\nwarmup_steps: 1\n", "foca"), BuildContext{});
  FocaOptions fo;
  fo.interval = 3, fo.warmup_steps = 1;
  FocaPolicy fp(fo);
  BOOST_CHECK(at::equal(with(foca).samples, with(fp).samples));
}

BOOST_FIXTURE_TEST_CASE(around_dbcache_the_skipped_blocks_are_forecast_at_the_same_flops, Fixture) {
  const char* db = "type: dbcache\nthreshold: 1.0e9\nwarmup_steps: 3\nfront_blocks: 1\nback_blocks: 1\nmax_consecutive: 2\n";
  ForecastLayer f(around(db, "taylorseer"), BuildContext{});
  DbCacheOptions d;
  d.threshold = 1e9, d.warmup_steps = 3, d.front_blocks = 1, d.back_blocks = 1, d.max_consecutive = 2;
  DbCachePolicy plain(d);
  auto t = with(f), p = with(plain);
  BOOST_CHECK_EQUAL(t.flops, p.flops);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const bool skipped = p.steps[i].decision[site("blocks.1")] == uint8_t(Decision::Reuse);
    BOOST_CHECK_EQUAL(t.steps[i].decision[site("blocks.1")], uint8_t(skipped ? Decision::Predict : Decision::Compute));
    BOOST_CHECK_EQUAL(t.steps[i].decision[site("blocks.2")], uint8_t(skipped ? Decision::Predict : Decision::Compute));
  }
  BOOST_CHECK_GT(count(t, site("blocks.1"), Decision::Predict), 0);
  BOOST_CHECK(!at::equal(t.samples, p.samples));
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  BOOST_TEST_MESSAGE("dbcache alone: final rel L1 " << p.steps.back().err_ref_rel_l1 << ", with the TaylorSeer forecaster "
                                                    << t.steps.back().err_ref_rel_l1);
}

BOOST_AUTO_TEST_CASE(a_forecaster_needs_an_inner_policy) {
  register_all();
  check_error([] { caches().resolve(parse_config_string("type: forecast\nforecaster: foca\n", "e.yaml")); }, {"inner"});
  check_error([] { caches().resolve(parse_config_string("type: forecast\ninner: {type: fora}\nforecaster: foca\nform: newton\n", "e.yaml")); },
              {"form"});
  auto node = caches().resolve(parse_config_string("type: forecast\ninner: {type: dbcache}\norder: 1\n", "e.yaml"));
  BOOST_CHECK_EQUAL(to_yaml(caches().resolve(parse_config_string(to_yaml(node), "r.yaml"))), to_yaml(node));
}

BOOST_AUTO_TEST_SUITE_END()
