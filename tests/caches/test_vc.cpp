// vc (Q&C's variance compensation): the identity on its own calibration trajectory, a
// finite factor that changes a cached run, strength 0 = the inner policy bit for bit, and
// a missing or foreign table is a clear error.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/fora.h"
#include "caches/vc.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "framework/safetensors.h"
#include "tests/caches/fixture.h"

using namespace cachelab;

namespace {

struct VcFixture : Fixture {
  cachelab::testing::TempDir dir;
  VcOptions options(double strength, bool fora) const {
    VcOptions o;
    o.table = dir.path + "/vc.safetensors";
    o.strength = strength;
    if (fora) o.inner = {"cache", caches().resolve(parse_config_string("type: fora\ninterval: 3\n", "t.yaml"))};
    return o;
  }
  std::vector<double> factors(const Trajectory& t) {
    int e = -1;
    for (size_t i = 0; i < t.extras.size(); ++i)
      if (t.extras[i].name == "vc_factor") e = int(i);
    BOOST_REQUIRE(e >= 0);
    std::vector<double> f;
    for (auto& s : t.steps) f.push_back(s.site_extra[size_t(e)][size_t(site("model"))]);
    return f;
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(vc_variance_compensation, VcFixture)

BOOST_AUTO_TEST_CASE(identity_on_its_calibration_trajectory_and_a_real_factor_under_a_cache) {
  VcCorrector cal(options(1, true), BuildContext{&model.sites(), nullptr, &model.linears(), &run});
  cal.start_calibration();
  auto ct = with(cal);
  BOOST_TEST_MESSAGE(cal.finish_calibration());
  // Calibration follows the uncached trajectory, whatever the inner policy.
  BOOST_CHECK_LT((ct.samples - ref_traj.samples).abs().max().item<double>(), 1e-6);
  auto table = read_safetensors(dir.path + "/vc.safetensors");
  BOOST_CHECK_EQUAL(table.tensors[0].second.numel(), 12);
  // Without a cache the run is the calibration trajectory: every factor is 1.
  VcCorrector same(options(1, false), BuildContext{});
  auto st = with(same);
  for (double f : factors(st)) BOOST_CHECK_CLOSE(f, 1.0, 1e-4);
  BOOST_CHECK_LT((st.samples - ref_traj.samples).abs().max().item<double>(), 1e-4);
  // Under FORA the spread drifts and the factor corrects it.
  VcCorrector comp(options(1, true), BuildContext{&model.sites(), nullptr, &model.linears(), &run});
  auto vt = with(comp);
  double off = 0;
  for (double f : factors(vt)) {
    BOOST_CHECK(std::isfinite(f) && f > 0);
    off = std::max(off, std::fabs(f - 1));
  }
  BOOST_TEST_MESSAGE("largest |factor - 1| under fora 3: " << off);
  BOOST_CHECK_GT(off, 1e-5);
  // strength 0: FORA alone, bit for bit.
  VcCorrector none(options(0, true), BuildContext{&model.sites(), nullptr, &model.linears(), &run});
  ForaOptions fo;
  fo.interval = 3;
  ForaPolicy fora(fo);
  BOOST_CHECK(at::equal(with(none).samples, with(fora).samples));
}

BOOST_AUTO_TEST_CASE(missing_or_foreign_tables_are_refused) {
  VcCorrector missing(options(1, false), BuildContext{});
  cachelab::testing::check_error([&] { with(missing); }, {"no spread table", "cachelab calibrate"});
  write_safetensors(dir.path + "/vc.safetensors", {{"std", at::ones({12})}}, {{"backbone_digest", "0123456789abcdef"}});
  VcCorrector foreign(options(1, false), BuildContext{});
  cachelab::testing::check_error([&] { with(foreign); }, {"digest"});
  cachelab::testing::check_error(
      [] { caches().resolve(parse_config_string("type: vc\ntable: x\nstrength: 3\n", "exp.yaml")); }, {"strength"});
  auto node = caches().resolve(parse_config_string("type: vc\ntable: x.safetensors\ninner: {type: fora}\n", "exp.yaml"));
  BOOST_CHECK_EQUAL(to_yaml(caches().resolve(parse_config_string(to_yaml(node), "again.yaml"))), to_yaml(node));
}

BOOST_AUTO_TEST_SUITE_END()
