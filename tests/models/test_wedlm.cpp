// WeDLM (Liu et al. 2025): llada's topological attention, the `wedlm` decoder, the streaming-
// window objective and the exact prefix cache (block_kv) on a topological model, on a small
// random llada (prompt 6, generation 16). What it must show: the rank mask lets a query see
// exactly the keys ranked at or before it; a masked position sees every observed token (also
// later ones) while an observed one sees only the observed ones before it; a forward that stops
// at the window's end returns the full forward's logits there; the decoding rule's entropy,
// distance penalty and fallback, checked by hand; block_kv is exact and, at window 1
// (autoregressive decoding), computes the token decoded last and the next position only; the
// objective hides the answer after the window; what cannot serve a topological model says so.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/flash_block.h"
#include "caches/seq_kv.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "models/llada.h"
#include "models/lm_decoders.h"
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

constexpr int64_t kPrompt = 6, kGen = 16, kL = kPrompt + kGen, kMask = 39;

LladaOptions small(bool topological = true) {
  LladaOptions o = small_llada(3);
  o.topological = topological;
  return o;
}

at::Tensor logits(Llada& m, const at::Tensor& x, int64_t context = 0, int64_t block_end = -1) {
  PassThroughHooks hooks(m.linears());
  at::NoGradGuard g;
  Cond c;
  c.context = context;
  c.block_end = block_end;
  return m.forward(x, at::zeros({x.size(0)}), c, hooks);
}

double moved(const at::Tensor& a, const at::Tensor& b, int64_t pos) {
  return (a.select(1, pos) - b.select(1, pos)).abs().max().item<double>();
}

std::shared_ptr<const LmDecoder> wedlm_rule(int window, double threshold = 0.4, double penalty = 0.02) {
  WedlmDecodingOptions o;
  o.window = window;
  o.threshold = threshold;
  o.penalty = penalty;
  return std::make_shared<WedlmDecoder>(o);
}

MdlmPipelineOptions pipeline() {
  MdlmPipelineOptions o;
  o.prompt_length = int(kPrompt);
  o.gen_length = int(kGen);
  o.block_length = int(kGen);
  o.steps_per_block = int(kGen);
  return o;
}


}  // namespace

BOOST_AUTO_TEST_SUITE(wedlm)

BOOST_AUTO_TEST_CASE(the_rank_mask_lets_a_query_see_the_keys_ranked_at_or_before_it) {
  AttnCall call;
  call.order = at::tensor(std::vector<int64_t>{1, 0, 3, 2}).unsqueeze(0);
  call.q_positions = at::arange(4, at::kLong).unsqueeze(0);
  call.kv_positions = call.q_positions;
  auto m = attention_mask(call, at::zeros({1, 1, 4, 2}));
  const int64_t order[4] = {1, 0, 3, 2};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      BOOST_CHECK_EQUAL(std::isinf(m[0][0][i][j].item<float>()), order[j] > order[i]);
  // A subset of rows against other keys: the ranks are looked up at the positions.
  call.q_positions = at::tensor(std::vector<int64_t>{1}).view({1, 1});
  call.kv_positions = at::tensor(std::vector<int64_t>{0, 1, 3}).view({1, 3});
  auto sub = attention_mask(call, at::zeros({1, 1, 1, 2}));
  BOOST_CHECK(std::isinf(sub[0][0][0][0].item<float>()) && sub[0][0][0][1].item<float>() == 0 &&
              std::isinf(sub[0][0][0][2].item<float>()));
}

BOOST_AUTO_TEST_CASE(a_masked_position_sees_every_observed_token_an_observed_one_only_earlier_ones) {
  Llada m(small());
  BOOST_CHECK(m.sequence_kind() == SequenceKind::Topological);
  auto gen = at::detail::createCPUGenerator(5);
  auto x = at::randint(kMask, {2, kL}, gen);
  for (int64_t p : {8, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}) x.select(1, p).fill_(kMask);  // observed: 10, 11
  auto full = logits(m, x);
  auto y = x.clone();
  y.select(1, 11).fill_(38);  // an observed token after masked positions 8, 9
  auto other = logits(m, y);
  for (int64_t p = 0; p < 11; ++p)
    if (p != 8 && p != 9) BOOST_CHECK_SMALL(moved(other, full, p), 1e-6);  // observed before it: unmoved
  BOOST_CHECK_GT(moved(other, full, 8), 1e-3);   // masked before it: sees it
  BOOST_CHECK_GT(moved(other, full, 12), 1e-3);  // masked after it: sees it
  // Unmasking position 14 moves the masked positions before it too (it is observed now).
  auto z = x.clone();
  z.select(1, 14).fill_(7);
  auto unmasked = logits(m, z);
  BOOST_CHECK_GT(moved(unmasked, full, 9), 1e-3);
  BOOST_CHECK_SMALL(moved(unmasked, full, 10), 1e-6);
  // The bidirectional model lets the prompt see a later observed token.
  Llada bi(small(false));
  BOOST_CHECK_GT(moved(logits(bi, y), logits(bi, x), 0), 1e-3);
}

BOOST_AUTO_TEST_CASE(a_forward_that_stops_at_the_window_returns_the_full_forwards_logits) {
  Llada m(small());
  auto gen = at::detail::createCPUGenerator(6);
  auto x = at::randint(kMask, {2, kL}, gen);
  x.narrow(1, 9, kL - 9).fill_(kMask);
  x.select(1, 11).fill_(5);  // an observed token inside the window
  auto full = logits(m, x);
  for (auto [ctx, end] : {std::pair<int64_t, int64_t>{9, 13}, {6, 10}}) {
    auto part = logits(m, x, ctx, end);  // computes positions < max(end, 12) only
    BOOST_REQUIRE_EQUAL(part.size(1), end - ctx);
    BOOST_CHECK_SMALL((part - full.narrow(1, ctx, end - ctx)).abs().max().item<double>(), 1e-5);
  }
}

BOOST_AUTO_TEST_CASE(the_rule_commits_low_entropy_positions_under_a_distance_penalty) {
  // Positions 1 .. 3 masked (the first masked is 1): 1 uniform over 3 tokens (entropy ln 3),
  // 2 and 3 sure (entropy ~ 0) of tokens 2 and 0.
  UnmaskStep s;
  s.logits = at::tensor(std::vector<float>{9, 0, 0, 0, 0, 0, 0, 0, 40, 40, 0, 0}).view({1, 4, 3});
  s.masked = at::tensor(std::vector<uint8_t>{0, 1, 1, 1}).to(at::kBool).view({1, 4});
  auto pick = [&](double threshold, double penalty) {
    auto c = wedlm_rule(4, threshold, penalty)->choose(s);
    BOOST_CHECK_EQUAL(c.tokens[0][2].item<int64_t>(), 2);
    BOOST_CHECK_EQUAL(c.tokens[0][3].item<int64_t>(), 0);
    return c.unmask.to(at::kLong).squeeze(0);
  };
  auto expect = [](std::vector<int64_t> v) { return at::tensor(v); };
  BOOST_CHECK(at::equal(pick(0.4, 0.02), expect({0, 0, 1, 1})));   // 0.02, 0.04 < 0.4; ln 3 is not
  BOOST_CHECK(at::equal(pick(0.4, 0.3), expect({0, 0, 1, 0})));    // 0.3 < 0.4 < 0.6
  BOOST_CHECK(at::equal(pick(1e-3, 0.3), expect({0, 0, 1, 0})));   // none under: the least (0.3)
  BOOST_CHECK(at::equal(pick(1e-3, 1.2), expect({0, 1, 0, 0})));   // ln 3 < 1.2 x 1
  BOOST_CHECK(at::equal(pick(2.0, 0.0), expect({0, 1, 1, 1})));    // ln 3 < 2
  const DecodeWindow w = wedlm_rule(5)->window();
  BOOST_CHECK(w.masked == 5 && w.max_span == 5);
}

BOOST_AUTO_TEST_CASE(the_prefix_cache_is_exact_and_autoregressive_decoding_computes_two_rows_a_step) {
  Llada m(small());
  const RunOptions run = three_samples();
  for (int window : {1, 4}) {
    MdlmPipeline pipe(pipeline(), wedlm_rule(window));
    ReferenceTrace ref;
    auto plain = run_seq(m, pipe, nullptr, run, nullptr, &ref);
    BlockKvCache c(BlockKvOptions{});
    auto t = run_seq(m, pipe, &c, run, &ref, nullptr);
    BOOST_CHECK(at::equal(t.samples, plain.samples));
    BOOST_CHECK_EQUAL(t.samples.eq(kMask).sum().item<int64_t>(), 0);
    BOOST_CHECK_LT(t.flops, plain.flops);
    BOOST_TEST_MESSAGE("window " << window << ": block_kv FLOPs / uncached " << t.flops / plain.flops);
    if (window != 1) continue;
    // Step i decodes position P + i; the model computes up to P + i + 1, the store supplies
    // everything but the token decoded at the step before (computed once more with its token,
    // then kept: WeDLM's commit) and the position decoded now.
    const int hit = extra_id(t, "kv_hit_rate"), site = find_site(m.sites(), "blocks.1.attn");
    BOOST_REQUIRE(hit >= 0 && site >= 0);
    BOOST_REQUIRE_EQUAL(t.steps.size(), size_t(kGen));
    for (size_t i = 0; i < t.steps.size(); ++i) {
      const double h = t.steps[i].site_extra[size_t(hit)][size_t(site)], Lc = double(kPrompt + int64_t(i) + 1);
      const double want = i == 0 ? 0.0 : 1 - 2.0 / Lc;
      BOOST_CHECK_MESSAGE(std::abs(h - want) < 1e-12, "step " << i << ": hit rate " << h << ", expected " << want);
    }
  }
}

BOOST_AUTO_TEST_CASE(the_objective_hides_the_answer_after_the_window) {
  // 64 answers of 8 tokens; the last answer token changes. With a window of 2 it reaches the
  // loss only when the window's start is one of the last two positions (about a quarter of the
  // samples); with the window up to the end, nearly always (target or visible context).
  Llada m(small());
  const int64_t B = 64, G = 8;
  auto gen = at::detail::createCPUGenerator(8);
  auto prompt = at::randint(38, {B, kPrompt}, gen), answer = at::randint(38, {B, G}, gen);
  auto other = answer.clone();
  other.select(1, G - 1).fill_(38);
  auto count = [&](int64_t window) {
    auto loss = [&](const at::Tensor& a) {
      at::NoGradGuard g;
      auto lg = at::detail::createCPUGenerator(11);
      return masked_lm_loss(m, prompt, a, lg, 1e-3, window);
    };
    auto base = loss(answer);
    BOOST_CHECK(at::isfinite(base).all().item<bool>());
    return (loss(other) - base).abs().gt(1e-6).sum().item<int64_t>();
  };
  const int64_t narrow = count(2), wide = count(0);
  BOOST_TEST_MESSAGE("samples the last token moves: window 2 " << narrow << ", to the end " << wide << " of " << B);
  BOOST_CHECK(narrow > 0 && narrow < B / 2);
  BOOST_CHECK_GT(wide, B / 2);
  // The window belongs to topological models.
  Llada bi(small(false));
  auto lg = at::detail::createCPUGenerator(1);
  cachelab::testing::check_error([&] { masked_lm_loss(bi, prompt, answer, lg, 1e-3, 2); }, {"window", "topological"});
}

BOOST_AUTO_TEST_CASE(what_cannot_serve_a_topological_model_says_so) {
  RunContext topological;
  topological.sequence = SequenceKind::Topological;
  Llada m(small());
  FlashBlockCache fb(FlashBlockOptions{});
  cachelab::testing::check_error([&] { fb.begin_run(m.linears(), &topological); }, {"flash_block", "topological"});
  BlockKvCache c(BlockKvOptions{});
  c.begin_run(m.linears(), &topological);  // the exact prefix cache serves it
  cachelab::testing::check_error(
      [] { backbones().resolve(parse_config_string("type: llada\ntopological: true\nblock_size: 4\n", "b.yaml")); },
      {"topological", "block_size"});
  cachelab::testing::check_error(
      [] { lm_decoders().resolve(parse_config_string("type: wedlm\nwindow: 0\n", "exp.yaml")); }, {"window", ">= 1"});
  auto node = lm_decoders().resolve(parse_config_string("type: wedlm\nwindow: 8\npenalty: 0.1\n", "exp.yaml"));
  BOOST_CHECK(lm_decoders().build(node)->window().masked == 8);
}

BOOST_AUTO_TEST_SUITE_END()
