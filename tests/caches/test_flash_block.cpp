// flash_block (FlashBlock over the dual cache) on the mdlm pipeline. What it must show: merging
// two parts' outputs by their log-sum-exp is the attention over all keys (the identity the
// method rests on), refreshing every step is the uncached run bit for bit, and the steps that
// reuse the block-external part count only the block's keys in their attention FLOPs.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>

#include "caches/flash_block.h"
#include "caches/seq_kv.h"
#include "framework/config.h"
#include "framework/ops.h"
#include "framework/registries.h"
#include "tests/caches/mdlm_fixture.h"

using namespace cachelab;
using cachelab::testing::MdlmFixture;
using cachelab::testing::run_seq;

BOOST_FIXTURE_TEST_SUITE(flash_block, MdlmFixture)

BOOST_AUTO_TEST_CASE(merged_parts_are_the_attention_over_every_key) {
  at::manual_seed(3);
  auto q = at::randn({2, 3, 5, 8}), k = at::randn({2, 3, 11, 8}) * 2, v = at::randn({2, 3, 11, 8});
  auto dense = dense_attention(q, k, v, at::Tensor());
  // Any split of the keys: the first 4 and the other 7.
  auto a = FlashBlockCache::partial(q, k.narrow(2, 0, 4), v.narrow(2, 0, 4));
  auto b = FlashBlockCache::partial(q, k.narrow(2, 4, 7), v.narrow(2, 4, 7));
  const double err = (FlashBlockCache::merge(a.first, a.second, b.first, b.second) - dense).abs().max().item<double>();
  BOOST_TEST_MESSAGE("merged vs dense attention, max |error|: " << err);
  BOOST_CHECK_LT(err, 1e-5);
}

BOOST_AUTO_TEST_CASE(refreshing_every_step_is_bitwise_the_uncached_run) {
  FlashBlockOptions o;
  o.refresh = 1;
  FlashBlockCache c(o);
  auto t = run_seq(model, pipe, &c, run, &ref, nullptr);
  BOOST_CHECK(at::equal(t.samples, ref_traj.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
}

BOOST_AUTO_TEST_CASE(reusing_steps_count_only_the_block_keys) {
  FlashBlockCache c(FlashBlockOptions{});
  auto t = run_seq(model, pipe, &c, run, &ref, nullptr);
  DualKvCache dual(DualKvOptions{});
  auto d = run_seq(model, pipe, &dual, run, &ref, nullptr);
  BOOST_CHECK_EQUAL(t.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  // Per reusing step (3 of every block's 4), layer and sample: the 8 block queries no longer
  // score the 24 keys outside the block (scores + weighted sum: 4 x 8 x 24 x width FLOPs);
  // at each block's first step they score them once more, for the kept external part.
  const double width = 32, layers = 2, samples = 3, reusing = 3 * 3, first = 3;
  const double want = d.flops - (reusing - first) * layers * samples * 4 * 8 * 24 * width;
  BOOST_CHECK_CLOSE(t.flops, want, 1e-9);
  int64_t same = t.samples.eq(d.samples).sum().item<int64_t>();
  BOOST_TEST_MESSAGE("flash_block FLOPs / dual_kv " << t.flops / d.flops << "; tokens equal to dual_kv's: " << same
                                                    << " of " << t.samples.numel());
}

BOOST_AUTO_TEST_CASE(bad_settings_are_refused) {
  BOOST_CHECK_THROW(ops_layers().resolve(parse_config_string("type: flash_block\nrefresh: -1\n", "exp.yaml")), Error);
  auto node = ops_layers().resolve(parse_config_string("type: flash_block\nrefresh: 2\n", "exp.yaml"));
  BOOST_CHECK(ops_layers().build(node) != nullptr);
}

BOOST_AUTO_TEST_SUITE_END()
