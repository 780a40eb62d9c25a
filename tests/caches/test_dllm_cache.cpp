// dllm_cache (dLLM-Cache) on the mdlm pipeline. What it must show: recomputing everything at
// every step is the uncached run bit for bit; the rows each layer computes follow the two
// intervals and V-verify's share (read back from the hit rate); V-verify picks the positions
// whose values changed most; bad settings are refused.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/dllm_cache.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "tests/caches/mdlm_fixture.h"

using namespace cachelab;
using cachelab::testing::extra_id;
using cachelab::testing::MdlmFixture;
using cachelab::testing::run_seq;

namespace {
DllmCacheOptions intervals(int prompt, int gen, double ratio) {
  DllmCacheOptions o;
  o.prompt_interval = prompt;
  o.gen_interval = gen;
  o.transfer_ratio = ratio;
  return o;
}
}  // namespace

BOOST_FIXTURE_TEST_SUITE(dllm_cache, MdlmFixture)

BOOST_AUTO_TEST_CASE(refreshing_everything_every_step_is_bitwise_the_uncached_run) {
  DllmCache c(intervals(1, 1, 0.25));
  auto t = run_seq(model, pipe, &c, run, &ref, nullptr);
  BOOST_CHECK(at::equal(t.samples, ref_traj.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
}

BOOST_AUTO_TEST_CASE(rows_follow_the_intervals_and_the_verified_share) {
  // Prompt 8 + 24 generated positions: at a step refreshing neither, each layer after the
  // first recomputes floor(24 x 0.25) = 6 generated positions, so 26 of the 32 keys each query
  // sees come from the store; at a generated-only refresh, 24 are recomputed (8 from the store).
  DllmCache c(intervals(6, 3, 0.25));
  auto t = run_seq(model, pipe, &c, run, &ref, nullptr);
  const int hit = extra_id(t, "kv_hit_rate");
  const int a0 = find_site(model.sites(), "layers.0.attn"), a1 = find_site(model.sites(), "layers.1.attn");
  BOOST_REQUIRE(hit >= 0 && a0 >= 0 && a1 >= 0);
  for (size_t s = 0; s < t.steps.size(); ++s) {
    const double h0 = t.steps[s].site_extra[size_t(hit)][size_t(a0)], h1 = t.steps[s].site_extra[size_t(hit)][size_t(a1)];
    const bool prompt = s % 6 == 0, gen = s % 3 == 0;
    const double want = prompt && gen ? 0.0 : gen ? 8.0 / 32 : prompt ? 1.0 - 14.0 / 32 : 1.0 - 6.0 / 32;
    BOOST_CHECK_SMALL(h0, 1e-12);  // layer 0 computes every position
    BOOST_CHECK_MESSAGE(std::abs(h1 - want) < 1e-12, "step " << s << ": layer 1 hit rate " << h1 << ", want " << want);
  }
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  BOOST_CHECK_EQUAL(t.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  BOOST_TEST_MESSAGE("dllm_cache (6, 3, 0.25) FLOPs / uncached: " << t.flops / ref_traj.flops);
}

BOOST_AUTO_TEST_CASE(v_verify_picks_the_most_changed_values) {
  at::manual_seed(5);
  auto v_old = at::randn({2, 2, 8, 4});
  auto v_new = v_old.clone();
  // Sample 0: positions 1 and 6 change most; sample 1: positions 3 and 4.
  v_new.select(0, 0).narrow(1, 1, 1).neg_();
  v_new.select(0, 0).narrow(1, 6, 1).mul_(-0.5);
  v_new.select(0, 1).narrow(1, 3, 1).neg_();
  v_new.select(0, 1).narrow(1, 4, 1).copy_(at::randn({2, 1, 4}));
  v_new.select(0, 0).narrow(1, 0, 1).mul_(3.0);  // a scale: the same direction, not chosen
  auto gpos = (at::arange(8, at::kLong) + 10).unsqueeze(0).expand({2, 8}).contiguous();
  auto chosen = std::get<0>(DllmCache::choose(gpos, v_new, v_old, 0.25).sort(1));
  BOOST_CHECK(at::equal(chosen, at::tensor({11, 16, 13, 14}, at::kLong).view({2, 2})));
}

BOOST_AUTO_TEST_CASE(bad_settings_are_refused) {
  BOOST_CHECK_THROW(ops_layers().resolve(parse_config_string("type: dllm_cache\ntransfer_ratio: 0\n", "exp.yaml")), Error);
  BOOST_CHECK_THROW(ops_layers().resolve(parse_config_string("type: dllm_cache\ngen_interval: 0\n", "exp.yaml")), Error);
  auto node = ops_layers().resolve(parse_config_string("type: dllm_cache\n", "exp.yaml"));
  BOOST_CHECK(ops_layers().build(node) != nullptr);
}

BOOST_AUTO_TEST_SUITE_END()
