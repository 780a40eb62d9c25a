// elastic_cache (Elastic-Cache) on the mdlm pipeline. What it must show: the refresh follows its
// rule (every layer deeper than the first whose probe cosine falls below gamma recomputes every
// position, and only those), refreshed layers serve nothing from the store, gamma 0 never
// refreshes and costs the dual cache plus the probes, and bad settings are refused.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/elastic_cache.h"
#include "caches/seq_kv.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "tests/caches/mdlm_fixture.h"

using namespace cachelab;
using cachelab::testing::extra_id;
using cachelab::testing::run_seq;

namespace {

// The fixture's sequence on a 4-layer tiny_mdlm, so a refresh can start at several depths.
struct DeepMdlm : cachelab::testing::MdlmFixture {
  TinyMdlm deep{[] {
    TinyMdlmOptions o;
    o.hidden_size = 32;
    o.max_length = 32;
    o.depth = 4;
    return o;
  }()};
  ReferenceTrace deep_ref;
  Trajectory deep_traj;
  DeepMdlm() { deep_traj = run_seq(deep, pipe, nullptr, run, nullptr, &deep_ref); }
  Trajectory with(Ops& ops) { return run_seq(deep, pipe, &ops, run, &deep_ref, nullptr); }
  std::vector<int> attn_sites() const {
    std::vector<int> out;
    for (int i = 0; i < 4; ++i) out.push_back(find_site(deep.sites(), "layers." + std::to_string(i) + ".attn"));
    return out;
  }
};

ElasticCacheOptions with_gamma(double g) {
  ElasticCacheOptions o;
  o.gamma = g;
  return o;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(elastic_cache, DeepMdlm)

BOOST_AUTO_TEST_CASE(refresh_starts_below_the_first_drifted_probe) {
  ElasticCache c(with_gamma(0.999));
  auto t = with(c);
  const int cos = extra_id(t, "elastic_probe_cosine"), ref = extra_id(t, "elastic_refresh"),
            hit = extra_id(t, "kv_hit_rate");
  BOOST_REQUIRE(cos >= 0 && ref >= 0 && hit >= 0);
  const auto sites = attn_sites();
  int refreshes = 0, probed = 0;
  for (size_t s = 0; s < t.steps.size(); ++s) {
    const auto& e = t.steps[s].site_extra;
    if (s % 4 == 0) {  // a block's first step: a full forward, no probe, no drift refresh
      for (int site : sites) BOOST_CHECK(std::isnan(e[size_t(cos)][size_t(site)]) && e[size_t(ref)][size_t(site)] == 0);
      continue;
    }
    int first = -1;  // the first layer whose probe drifted below gamma
    for (int l = 0; l < 4; ++l) {
      const double c = e[size_t(cos)][size_t(sites[size_t(l)])];
      if (first < 0) {
        BOOST_CHECK_MESSAGE(std::isfinite(c), "step " << s << " layer " << l << ": no probe cosine");
        ++probed;
        if (c < 0.999 && l + 1 < 4) first = l;
      } else {
        BOOST_CHECK(std::isnan(c));  // no probe once every position is recomputed
      }
      const bool refreshed = e[size_t(ref)][size_t(sites[size_t(l)])] == 1.0;
      BOOST_CHECK_EQUAL(refreshed, first >= 0 && l > first);
      if (refreshed) BOOST_CHECK_SMALL(e[size_t(hit)][size_t(sites[size_t(l)])], 1e-12);  // nothing from the store
      refreshes += refreshed;
    }
  }
  BOOST_TEST_MESSAGE("gamma 0.999: " << refreshes << " refreshed layer-steps, " << probed << " probes");
  BOOST_CHECK_GT(refreshes, 0);
  BOOST_CHECK_GT(probed, 0);
}

BOOST_AUTO_TEST_CASE(gamma_zero_never_refreshes_and_pays_the_probes) {
  ElasticCache c(with_gamma(0));
  auto t = with(c);
  DualKvCache dual(DualKvOptions{});
  auto d = with(dual);
  const int ref = extra_id(t, "elastic_refresh");
  for (const auto& s : t.steps)
    for (double v : s.site_extra[size_t(ref)]) BOOST_CHECK(std::isnan(v) || v == 0.0);
  BOOST_TEST_MESSAGE("FLOPs / uncached: elastic gamma 0 " << t.flops / deep_traj.flops << ", dual_kv "
                                                          << d.flops / deep_traj.flops);
  BOOST_CHECK_GT(t.flops, d.flops);  // the probe rows
  BOOST_CHECK_LT(t.flops, deep_traj.flops);
  ElasticCache always(with_gamma(1.0));
  auto a = with(always);
  BOOST_CHECK_GT(a.flops, t.flops);
  BOOST_CHECK_LT(a.flops, deep_traj.flops);
  BOOST_CHECK_EQUAL(a.samples.eq(deep.mask_id()).sum().item<int64_t>(), 0);
}

BOOST_AUTO_TEST_CASE(bad_settings_are_refused) {
  BOOST_CHECK_THROW(ops_layers().resolve(parse_config_string("type: elastic_cache\ngamma: 1.5\n", "exp.yaml")), Error);
  auto node = ops_layers().resolve(parse_config_string("type: elastic_cache\ngamma: 0.8\n", "exp.yaml"));
  BOOST_CHECK(ops_layers().build(node) != nullptr);
}

BOOST_AUTO_TEST_SUITE_END()
