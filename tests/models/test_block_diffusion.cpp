// Block diffusion (Fast-dLLM v2): llada with block_size (block-causal attention), its training
// objective and the block_kv caches, on a small random llada (block_size 4, prompt 6). What it
// must show: a position never sees a later block (changing a later block's tokens leaves every
// earlier logit as it was) while it sees its own; a forward that stops at the current block
// returns what the full forward does there; the objective masks one block per sample; the
// block-level cache is exact (the uncached tokens, fewer FLOPs) and computes only the current
// block (read back from the hit rate); the sub-block cache computes the sub-block alone between
// refreshes; what cannot serve a block-causal model says so.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/test/unit_test.hpp>

#include "caches/flash_block.h"
#include "caches/seq_kv.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "models/llada.h"
#include "models/train_lm.h"
#include "tests/caches/mdlm_fixture.h"
#include "tests/models/small_llada.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::extra_id;
using cachelab::testing::run_seq;
using cachelab::testing::small_llada;
using cachelab::testing::three_samples;

namespace {

constexpr int64_t kPrompt = 6, kGen = 16, kBlock = 4;

LladaOptions small(int block_size) {
  LladaOptions o = small_llada(3);
  o.block_size = block_size;
  return o;
}

Cond prompt_of(int64_t B, int64_t L, int64_t context = 0, int64_t block_end = -1) {
  Cond c;
  c.context = context;
  c.block_end = block_end;
  c.token_state = at::cat({at::full({B, kPrompt}, kTokenPrompt, at::kInt), at::full({B, L - kPrompt}, kTokenMasked, at::kInt)}, 1);
  return c;
}

at::Tensor logits(Llada& m, const at::Tensor& x, const Cond& c) {
  PassThroughHooks hooks(m.linears());
  at::NoGradGuard g;
  return m.forward(x, at::zeros({x.size(0)}), c, hooks);
}

MdlmPipelineOptions pipeline(int block_length, int steps) {
  MdlmPipelineOptions o;
  o.prompt_length = int(kPrompt);
  o.gen_length = int(kGen);
  o.block_length = block_length;
  o.steps_per_block = steps;
  return o;
}


// The first layer attention site's kv_hit_rate at every step.
std::vector<double> hit_rates(const Trajectory& t, const Backbone& m) {
  const int hit = extra_id(t, "kv_hit_rate"), site = find_site(m.sites(), "blocks.1.attn");
  BOOST_REQUIRE(hit >= 0 && site >= 0);
  std::vector<double> h;
  for (const auto& s : t.steps) h.push_back(s.site_extra[size_t(hit)][size_t(site)]);
  return h;
}

// The block-causal model, random tokens of prompt + generation (batch 2) and its full forward.
struct Tokens {
  Llada m{small(int(kBlock))};
  const int64_t L = kPrompt + kGen;
  at::Tensor x, full;
  explicit Tokens(uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    x = at::randint(39, {2, L}, gen);
    full = logits(m, x, prompt_of(2, L));
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(block_diffusion)

BOOST_AUTO_TEST_CASE(a_position_sees_its_own_block_and_never_a_later_one) {
  Tokens t(5);
  Llada& m = t.m;
  const at::Tensor &x = t.x, &full = t.full;
  const int64_t L = t.L;
  BOOST_REQUIRE_EQUAL(full.size(1), L);
  // Blocks: the prompt [0, 6), then [6, 10), [10, 14), [14, 18), [18, 22).
  for (int64_t changed : {int64_t(6), int64_t(14)}) {
    auto y = x.clone();
    y.select(1, changed).fill_(38);
    auto other = logits(m, y, prompt_of(2, L));
    const int64_t block_start = changed;
    const double before = (other.narrow(1, 0, block_start) - full.narrow(1, 0, block_start)).abs().max().item<double>();
    const double inside = (other.narrow(1, block_start, kBlock) - full.narrow(1, block_start, kBlock)).abs().max().item<double>();
    BOOST_TEST_MESSAGE("token at " << changed << " changed: earlier logits move " << before << ", its block's " << inside);
    BOOST_CHECK_SMALL(before, 1e-6);
    BOOST_CHECK_GT(inside, 1e-3);
  }
  // The bidirectional model (block_size 0) lets the prompt see the generation.
  Llada bi(small(0));
  auto y = x.clone();
  y.select(1, 14).fill_(38);
  BOOST_CHECK_GT((logits(bi, y, prompt_of(2, L)).narrow(1, 0, kPrompt) - logits(bi, x, prompt_of(2, L)).narrow(1, 0, kPrompt))
                     .abs().max().item<double>(), 1e-3);
}

BOOST_AUTO_TEST_CASE(a_forward_stops_at_the_current_block_with_the_full_forwards_logits) {
  Tokens t(6);
  Llada& m = t.m;
  const at::Tensor &x = t.x, &full = t.full;
  const int64_t L = t.L;
  // A model block [10, 14), and the first half of [6, 10) (a sub-block).
  for (auto [ctx, end] : {std::pair<int64_t, int64_t>{10, 14}, {6, 8}}) {
    auto part = logits(m, x, prompt_of(2, L, ctx, end));
    BOOST_REQUIRE_EQUAL(part.size(1), end - ctx);
    BOOST_CHECK_SMALL((part - full.narrow(1, ctx, end - ctx)).abs().max().item<double>(), 1e-5);
  }
  // Without token states (a warm-up pass) there is no prompt: the blocks start at position 0.
  Cond none, no_prompt;
  no_prompt.token_state = at::full({2, L}, kTokenMasked, at::kInt);
  BOOST_CHECK(at::equal(logits(m, x, none), logits(m, x, no_prompt)));
  BOOST_CHECK(!at::equal(logits(m, x, none), full));
}

BOOST_AUTO_TEST_CASE(the_objective_masks_one_block_per_sample) {
  // Answers of two blocks; 24 samples. A sample's loss moves with the tokens of the second
  // block exactly when that block is the one masked (the first is then its clean context); the
  // first block's tokens move every sample's loss (its targets, or the context).
  Llada m(small(int(kBlock)));
  const int64_t B = 24;
  auto gen = at::detail::createCPUGenerator(8);
  auto prompt = at::randint(38, {B, kPrompt}, gen), answer = at::randint(38, {B, 2 * kBlock}, gen);
  auto loss = [&](const at::Tensor& a) {
    at::NoGradGuard g;
    auto lg = at::detail::createCPUGenerator(11);
    return masked_lm_loss(m, prompt, a, lg, 1e-3);
  };
  auto base = loss(answer);
  auto second = answer.clone(), first = answer.clone();
  second.narrow(1, kBlock, kBlock).fill_(37);
  first.narrow(1, 0, kBlock).fill_(37);
  auto moved2 = (loss(second) - base).abs().gt(1e-6), moved1 = (loss(first) - base).abs().gt(1e-6);
  const int64_t n2 = moved2.sum().item<int64_t>();
  BOOST_TEST_MESSAGE("samples whose loss the second block moves: " << n2 << " of " << B);
  BOOST_CHECK(n2 > 0 && n2 < B);
  // A sample whose masked block is the first may still mask nothing (t small): its loss is 0.
  BOOST_CHECK_EQUAL((moved1 | base.eq(0)).sum().item<int64_t>(), B);
  BOOST_CHECK(at::isfinite(base).all().item<bool>());
}

BOOST_AUTO_TEST_CASE(the_block_cache_is_exact_and_computes_the_current_block_only) {
  Llada m(small(int(kBlock)));
  MdlmPipeline pipe(pipeline(int(kBlock), int(kBlock)));  // one token per step
  ReferenceTrace ref;
  const RunOptions run = three_samples();
  auto plain = run_seq(m, pipe, nullptr, run, nullptr, &ref);
  BlockKvCache c(BlockKvOptions{});
  auto t = run_seq(m, pipe, &c, run, &ref, nullptr);
  BOOST_CHECK(at::equal(t.samples, plain.samples));
  BOOST_CHECK_EQUAL(t.samples.eq(m.mask_id()).sum().item<int64_t>(), 0);
  BOOST_CHECK_LT(t.flops, plain.flops);
  // Step s of block b: the model computes up to Lc = 10 + 4b; the block's 4 positions, and at
  // its first step (b >= 1) the 4 just finished too; the prompt is computed at the first step.
  const auto h = hit_rates(t, m);
  BOOST_REQUIRE_EQUAL(h.size(), size_t(kGen));
  for (size_t i = 0; i < h.size(); ++i) {
    const int64_t b = int64_t(i) / kBlock, Lc = kPrompt + kBlock * (b + 1);
    const double rows = i == 0 ? double(Lc) : i % kBlock == 0 ? 2.0 * kBlock : double(kBlock);
    BOOST_CHECK_MESSAGE(std::abs(h[i] - (1 - rows / double(Lc))) < 1e-12, "step " << i << ": hit rate " << h[i]);
  }
  BOOST_TEST_MESSAGE("block_kv FLOPs / uncached: " << t.flops / plain.flops);
}

BOOST_AUTO_TEST_CASE(the_sub_block_cache_computes_the_sub_block_alone_between_refreshes) {
  Llada m(small(int(kBlock)));
  const RunOptions run = three_samples();
  BlockKvOptions o;
  o.sub_block = true;
  {  // Sub-blocks as long as the model's blocks: nothing else of the block is cached, exact.
    MdlmPipeline pipe(pipeline(int(kBlock), int(kBlock)));
    ReferenceTrace ref;
    auto plain = run_seq(m, pipe, nullptr, run, nullptr, &ref);
    BlockKvCache c(o);
    BOOST_CHECK(at::equal(run_seq(m, pipe, &c, run, &ref, nullptr).samples, plain.samples));
  }
  MdlmPipeline pipe(pipeline(2, 2));  // sub-blocks of 2 in blocks of 4
  ReferenceTrace ref;
  auto plain = run_seq(m, pipe, nullptr, run, nullptr, &ref);
  BlockKvCache c(o);
  auto t = run_seq(m, pipe, &c, run, &ref, nullptr);
  BOOST_CHECK_EQUAL(t.samples.eq(m.mask_id()).sum().item<int64_t>(), 0);
  BlockKvCache block(BlockKvOptions{});
  auto tb = run_seq(m, pipe, &block, run, &ref, nullptr);
  BOOST_CHECK_LT(t.flops, tb.flops);
  const auto h = hit_rates(t, m);
  for (size_t i = 1; i < h.size(); i += 2) {  // a sub-block's second step: its 2 positions only
    const int64_t b = int64_t(i) / 4, Lc = kPrompt + kBlock * (b + 1);
    BOOST_CHECK_MESSAGE(std::abs(h[i] - (1 - 2.0 / double(Lc))) < 1e-12, "step " << i << ": hit rate " << h[i]);
  }
  BOOST_TEST_MESSAGE("sub-block cache FLOPs / uncached: " << t.flops / plain.flops << ", block cache alone "
                                                          << tb.flops / plain.flops);
}

BOOST_AUTO_TEST_CASE(what_cannot_serve_a_block_causal_model_says_so) {
  // block_kv on a bidirectional model.
  cachelab::testing::MdlmFixture bi;
  BlockKvCache c(BlockKvOptions{});
  cachelab::testing::check_error([&] { run_seq(bi.model, bi.pipe, &c, bi.run, &bi.ref, nullptr); }, {"block-causal"});
  // flash_block on a block-causal one.
  Llada m(small(int(kBlock)));
  MdlmPipeline pipe(pipeline(int(kBlock), int(kBlock)));
  FlashBlockCache fb(FlashBlockOptions{});
  cachelab::testing::check_error([&] { run_seq(m, pipe, &fb, three_samples(), nullptr, nullptr); }, {"block-causal"});
  // Both are refused when they bind, before any run (what `cachelab validate` does).
  RunContext bidirectional, block_causal;
  bidirectional.sequence = SequenceKind::Bidirectional;
  block_causal.sequence = SequenceKind::BlockCausal;
  cachelab::testing::check_error([&] { c.begin_run(m.linears(), &bidirectional); }, {"block_kv", "block-causal"});
  cachelab::testing::check_error([&] { fb.begin_run(m.linears(), &block_causal); }, {"flash_block", "block-causal"});
  // Settings, through the registry as an experiment's `ops:` entry.
  cachelab::testing::check_error(
      [] { ops_layers().resolve(parse_config_string("type: block_kv\nrefresh: -1\n", "exp.yaml")); }, {"refresh", ">= 0"});
  auto node = ops_layers().resolve(parse_config_string("type: block_kv\nsub_block: true\nrefresh: 2\n", "exp.yaml"));
  BOOST_CHECK(ops_layers().build(node) != nullptr);
}

BOOST_AUTO_TEST_SUITE_END()
