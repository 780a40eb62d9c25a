// TiDAR (Liu et al. 2025): llada's tidar attention, the dual objective, the tidar pipeline and
// the exact prefix cache on a small random llada (tidar = 3). What it must show: a MASK block
// sees the tokens before its first position and itself, no other block, and tokens see only
// earlier tokens; runs of MASK are cut into blocks of k (the training layout); the pipeline's
// output is greedy AR decoding token for token at every draft length (speculative decoding's
// guarantee), and block_kv keeps it while computing less; what cannot decode or serve a TiDAR
// model says so.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/test/unit_test.hpp>

#include "caches/seq_kv.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "models/llada.h"
#include "models/mdlm_pipeline.h"
#include "models/tidar_pipeline.h"
#include "models/train_lm.h"
#include "tests/caches/mdlm_fixture.h"
#include "tests/models/small_llada.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::run_seq;
using cachelab::testing::small_llada;
using cachelab::testing::three_samples;

namespace {

constexpr int64_t kMask = 39, kK = 3;

LladaOptions small(int tidar = int(kK)) {
  LladaOptions o = small_llada(4, 48);
  o.tidar = tidar;
  return o;
}

at::Tensor logits(Llada& m, const at::Tensor& x, const at::Tensor& positions) {
  PassThroughHooks hooks(m.linears());
  at::NoGradGuard g;
  Cond c;
  c.positions = positions.unsqueeze(0).expand({x.size(0), positions.size(0)});
  return m.forward(x, at::zeros({x.size(0)}), c, hooks);
}

double moved(const at::Tensor& a, const at::Tensor& b, int64_t from, int64_t n) {
  return (a.narrow(1, from, n) - b.narrow(1, from, n)).abs().max().item<double>();
}

at::Tensor arange(int64_t a, int64_t b) { return at::arange(a, b, at::kLong); }


TidarPipelineOptions decoding(int draft) {
  TidarPipelineOptions o;
  o.prompt_length = 6;
  o.gen_length = 10;
  o.draft = draft;
  return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tidar)

BOOST_AUTO_TEST_CASE(a_block_sees_the_tokens_before_its_start_and_itself_a_token_only_earlier_tokens) {
  // The pipeline's layout: 6 committed tokens, drafts at 6 and 7, blocks of 3 at 6.., 7.., 8..
  Llada m(small());
  BOOST_CHECK(m.sequence_kind() == SequenceKind::Tidar);
  auto gen = at::detail::createCPUGenerator(5);
  auto tokens = at::randint(kMask, {2, 8}, gen);
  auto x = at::cat({tokens, at::full({2, 9}, kMask, at::kLong)}, 1);
  auto positions = at::cat({arange(0, 8), arange(6, 9), arange(7, 10), arange(8, 11)});
  auto full = logits(m, x, positions);
  auto y = x.clone();
  y.select(1, 7).fill_(38);  // the second draft
  auto other = logits(m, y, positions);
  BOOST_CHECK_SMALL(moved(other, full, 0, 7), 1e-6);    // tokens before it
  BOOST_CHECK_SMALL(moved(other, full, 8, 6), 1e-6);    // blocks 0 and 1 (they see positions < 6, < 7)
  BOOST_CHECK_GT(moved(other, full, 14, 3), 1e-3);      // block 2 sees it
  BOOST_CHECK_GT(moved(other, full, 7, 1), 1e-3);       // and its own output moves
  // A block alone gives what it gave beside the others: blocks do not see each other.
  auto alone = logits(m, at::cat({tokens, at::full({2, 3}, kMask, at::kLong)}, 1), at::cat({arange(0, 8), arange(7, 10)}));
  BOOST_CHECK_SMALL((alone.narrow(1, 8, 3) - full.narrow(1, 11, 3)).abs().max().item<double>(), 1e-5);
}

BOOST_AUTO_TEST_CASE(runs_of_mask_are_cut_into_blocks_of_k) {
  // The training layout: prompt 4 + answer 6 as tokens, then the answer's 6 positions as MASK
  // in blocks of 3. The answer token at position 7 (the second block's first) is seen by the
  // tokens after it, but by neither MASK block (the second sees positions < 7).
  Llada m(small());
  auto gen = at::detail::createCPUGenerator(6);
  auto x = at::cat({at::randint(kMask, {2, 10}, gen), at::full({2, 6}, kMask, at::kLong)}, 1);
  auto positions = at::cat({arange(0, 10), arange(4, 10)});
  auto full = logits(m, x, positions);
  auto y = x.clone();
  y.select(1, 7).fill_(38);
  auto other = logits(m, y, positions);
  BOOST_CHECK_SMALL(moved(other, full, 10, 6), 1e-6);
  BOOST_CHECK_GT(moved(other, full, 8, 2), 1e-3);
  y = x.clone();
  y.select(1, 6).fill_(38);  // seen by the second block
  other = logits(m, y, positions);
  BOOST_CHECK_SMALL(moved(other, full, 10, 3), 1e-6);
  BOOST_CHECK_GT(moved(other, full, 13, 3), 1e-3);
  // The objective over that layout: finite, and it needs prompt + 2 x answer positions.
  auto lg = at::detail::createCPUGenerator(1);
  auto prompt = at::randint(38, {4, 4}, lg), answer = at::randint(38, {4, 6}, lg);
  auto loss = masked_lm_loss(m, prompt, answer, lg, 1e-3);
  BOOST_CHECK(loss.size(0) == 4 && at::isfinite(loss).all().item<bool>() && loss.min().item<double>() > 0);
  cachelab::testing::check_error([&] { masked_lm_loss(m, prompt, at::randint(38, {4, 24}, lg), lg, 1e-3); },
                                 {"max length", "masked answer"});
}

BOOST_AUTO_TEST_CASE(decoding_is_greedy_ar_decoding_at_every_draft_length_and_the_prefix_cache_keeps_it) {
  Llada m(small());
  const RunOptions run = three_samples();
  TidarPipeline ar_pipe(decoding(0));
  ReferenceTrace ar_ref;
  auto ar = run_seq(m, ar_pipe, nullptr, run, nullptr, &ar_ref);
  BOOST_CHECK_EQUAL(ar.samples.eq(kMask).sum().item<int64_t>(), 0);
  for (int draft : {1, 2, 3}) {
    TidarPipeline pipe(decoding(draft));
    ReferenceTrace ref;
    auto plain = run_seq(m, pipe, nullptr, run, nullptr, &ref);
    BOOST_CHECK_MESSAGE(at::equal(plain.samples, ar.samples), "draft " << draft << ": not the AR tokens");
    BlockKvCache c(BlockKvOptions{});
    auto cached = run_seq(m, pipe, &c, run, &ref, nullptr);
    BOOST_CHECK(at::equal(cached.samples, plain.samples));
    BOOST_CHECK_LT(cached.flops, plain.flops);
    BOOST_TEST_MESSAGE("draft " << draft << ": forwards " << plain.forwards << " (AR " << ar.forwards
                                << "), block_kv FLOPs / uncached " << cached.flops / plain.flops);
  }
  BlockKvCache c(BlockKvOptions{});
  BOOST_CHECK(at::equal(run_seq(m, ar_pipe, &c, run, &ar_ref, nullptr).samples, ar.samples));
}

BOOST_AUTO_TEST_CASE(drafts_the_ar_head_agrees_with_are_all_committed) {
  // A model that predicts token 5 everywhere (blocks pass the embedding through, the head sees
  // only row 5): every draft is the AR head's choice, so each forward after the first commits
  // draft tokens: 1, then 3 per forward with draft 3 (2 drafts + the AR token): 10 in 4.
  Llada m(small());
  {
    at::NoGradGuard g;
    for (auto& [name, t] : m.named_tensors()) {
      if (name.find("attn_out") != std::string::npos ||
          (name.find("blocks.") != std::string::npos && name.find("ff_out") != std::string::npos))
        t.zero_();
      if (name == "model.transformer.wte.weight") t.abs_().add_(0.1);
      if (name == "model.transformer.ff_out.weight") t.zero_().select(0, 5).fill_(1.0);
    }
  }
  const RunOptions run = three_samples();
  TidarPipeline ar_pipe(decoding(0)), pipe(decoding(3));
  auto ar = run_seq(m, ar_pipe, nullptr, run, nullptr, nullptr);
  auto t = run_seq(m, pipe, nullptr, run, nullptr, nullptr);
  BOOST_CHECK(at::equal(t.samples, ar.samples));
  BOOST_CHECK_EQUAL(t.samples.narrow(1, 6, 10).ne(5).sum().item<int64_t>(), 0);
  BOOST_CHECK_EQUAL(ar.forwards, 10);
  BOOST_CHECK_EQUAL(t.forwards, 4);
}

BOOST_AUTO_TEST_CASE(what_cannot_decode_or_serve_a_tidar_model_says_so) {
  Llada m(small());
  MdlmPipelineOptions mo;
  mo.prompt_length = 6;
  MdlmPipeline mdlm(mo);
  cachelab::testing::check_error([&] { run_seq(m, mdlm, nullptr, three_samples(), nullptr, nullptr); }, {"pipeline type tidar"});
  TidarPipeline wide(decoding(4));
  cachelab::testing::check_error([&] { run_seq(m, wide, nullptr, three_samples(), nullptr, nullptr); }, {"draft 4", "tidar 3"});
  Llada bi(small(0));
  TidarPipeline pipe(decoding(2));
  cachelab::testing::check_error([&] { run_seq(bi, pipe, nullptr, three_samples(), nullptr, nullptr); }, {"TiDAR model"});
  RunContext tidar;
  tidar.sequence = SequenceKind::Tidar;
  BlockKvCache c(BlockKvOptions{});
  c.begin_run(m.linears(), &tidar);  // the exact prefix cache serves it
  DualKvCache dual(DualKvOptions{});
  cachelab::testing::check_error([&] { dual.begin_run(m.linears(), &tidar); }, {"dual_kv", "TiDAR"});
  cachelab::testing::check_error(
      [] { backbones().resolve(parse_config_string("type: llada\ntidar: 4\ntopological: true\n", "b.yaml")); },
      {"tidar", "topological"});
  cachelab::testing::check_error(
      [] { pipelines().resolve(parse_config_string("type: tidar\ndraft: -1\n", "exp.yaml")); }, {"draft", ">= 0"});
  BOOST_CHECK(pipelines().build(pipelines().resolve(parse_config_string("type: tidar\ndraft: 2\n", "exp.yaml"))));
}

BOOST_AUTO_TEST_SUITE_END()
