// Cache policies on a small random DiT: they really hit, caps hold, signals are finite,
// `none` reproduces the reference bit for bit.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/fbcache.h"
#include "caches/fora.h"
#include "caches/none.h"
#include "framework/runner.h"
#include "models/samplers.h"
#include "tests/caches/fixture.h"

using namespace cachelab;

BOOST_FIXTURE_TEST_SUITE(policies, Fixture)

BOOST_AUTO_TEST_CASE(none_reproduces_the_reference_exactly) {
  NoCache none{NoCacheOptions{}};
  auto t = with(none);
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
  for (auto& s : t.steps) {
    BOOST_CHECK_EQUAL(s.err_ref_rel_l1, 0.0);
    for (size_t p = 0; p < s.decision.size(); ++p) {
      BOOST_CHECK_EQUAL(s.decision[p], uint8_t(Decision::Compute));
      BOOST_CHECK_EQUAL(s.err_ref[p], 0.0);
    }
  }
}

BOOST_AUTO_TEST_CASE(fora_reuses_on_the_off_steps_and_saves_the_expected_flops) {
  ForaOptions o;
  o.interval = 3;
  ForaPolicy fora(o);
  auto t = with(fora);
  const int attn = site("blocks.1.attn"), mlp = site("blocks.1.mlp"), block = site("blocks.1");
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto want = i % 3 == 0 ? Decision::Compute : Decision::Reuse;
    BOOST_CHECK_EQUAL(t.steps[i].decision[attn], uint8_t(want));
    BOOST_CHECK_EQUAL(t.steps[i].decision[mlp], uint8_t(want));
    BOOST_CHECK_EQUAL(t.steps[i].decision[block], uint8_t(Decision::Compute));
  }
  BOOST_CHECK_EQUAL(count(t, attn, Decision::Reuse), 8);
  // FLOPs: 4 of 12 steps compute attn+mlp; everything else every step.
  double sub = 0, rest = 0;
  for (auto& s : model.sites())
    (s.name.find(".attn") != std::string::npos || s.name.find(".mlp") != std::string::npos ? sub : rest) +=
        s.flops_per_sample;
  const double per_sample = 12 * rest + 4 * sub;
  BOOST_CHECK_CLOSE(t.flops, per_sample * 4 * 2 /* guidance doubles the batch */, 1e-9);
  // Reuse changes the result, but boundedly.
  BOOST_CHECK(!at::equal(t.samples, ref.samples));
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  BOOST_CHECK_GT(t.steps.back().err_ref_rel_l1, 0.0);
}

BOOST_AUTO_TEST_CASE(fbcache_hits_with_finite_signal_and_respects_the_caps) {
  FbCacheOptions o;
  o.threshold = 1e9;  // always similar enough: only warm-up and caps force computation
  o.warmup_steps = 2;
  o.max_consecutive = 2;
  FbCachePolicy fb(o);
  auto t = with(fb);
  const int decide_site = site("blocks.1"), last = site("blocks.3"), first = site("blocks.0");
  int run = 0, reused = 0;
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto& s = t.steps[i];
    BOOST_CHECK_EQUAL(s.decision[first], uint8_t(Decision::Compute));
    const bool reuse = s.decision[decide_site] == uint8_t(Decision::Reuse);
    BOOST_CHECK_EQUAL(s.decision[last], s.decision[decide_site]);
    if (i < 2) BOOST_CHECK(!reuse);
    if (i >= 1) BOOST_CHECK_MESSAGE(std::isfinite(s.signal[decide_site]), "signal at step " << i);
    run = reuse ? run + 1 : 0;
    reused += reuse;
    BOOST_CHECK_LE(run, o.max_consecutive);
    if (reuse) BOOST_CHECK_EQUAL(s.decision[site("blocks.2.attn")], uint8_t(Decision::Skipped));
  }
  BOOST_CHECK_GT(reused, 0);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
}

BOOST_AUTO_TEST_CASE(fbcache_with_zero_threshold_never_reuses) {
  FbCacheOptions o;
  o.threshold = 0.0;
  FbCachePolicy fb(o);
  auto t = with(fb);
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(count(t, site("blocks.1"), Decision::Reuse), 0);
}

BOOST_AUTO_TEST_CASE(fbcache_max_cached_steps_caps_the_total) {
  FbCacheOptions o;
  o.threshold = 1e9;
  o.max_consecutive = -1;
  o.max_cached_steps = 3;
  FbCachePolicy fb(o);
  auto t = with(fb);
  BOOST_CHECK_EQUAL(count(t, site("blocks.1"), Decision::Reuse), 3);
}

BOOST_AUTO_TEST_SUITE_END()
