// Deferred Commitment Decoding (the `sliding_window` lm_decoder) in the mdlm pipeline: on a
// stand-in masked LM whose confidences are known, an uncertain token at a window's right edge
// waits for its right neighbour where a fixed block forces it out; the window starts at the
// first masked position and refills to `window` masked positions; the step budget makes every
// step commit >= 1 token and the run end decoded; on tiny_mdlm, a window covering the
// generation (or one block committed whole) reproduces the fixed schedule token for token,
// and the dual K/V cache's exact setting reproduces the uncached sliding run bit for bit.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "caches/kv_cache.h"
#include "caches/seq_kv.h"
#include "framework/config.h"
#include "framework/direct_driver.h"
#include "framework/registries.h"
#include "models/lm_decoders.h"
#include "models/masked_lm.h"
#include "models/mdlm_pipeline.h"
#include "tests/caches/mdlm_fixture.h"
#include "tests/models/stand_in_lm.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::run_seq;

namespace {

// A stand-in masked LM over a vocabulary of 2 (MASK = 2). Mode `hard`: every position predicts
// token 0 at confidence 0.99, except position `hard`, which predicts token 1 at 0.6 while its
// right neighbour is MASK (it needs that context) and token 0 at 0.99 once it is decoded.
// Mode `table`: logits from a fixed random table of (position, left neighbour, right
// neighbour), so confidences vary and depend on what is decoded (vocabulary 4, MASK = 4).
// Records the window (context, block_end) and the token states of every forward.
class StandInLm final : public cachelab::testing::StandInMaskedLm {
 public:
  StandInLm(int64_t length, int64_t hard) : StandInMaskedLm(length, 2), hard_(hard) {}
  explicit StandInLm(int64_t length) : StandInMaskedLm(length, 4), hard_(-1) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    table_ = 2.5 * at::randn({length, V_ + 1, V_ + 1, V_}, gen);
  }
  at::Tensor logits(const at::Tensor& x, const Cond& cond) override {
    const int64_t B = x.size(0), a = cond.context, b = cond.block_end;
    windows.emplace_back(a, b);
    states.push_back(cond.token_state.clone());
    confidences.push_back(cond.confidence.clone());
    auto out = at::zeros({B, b - a, V_}, at::kFloat);
    for (int64_t s = 0; s < B; ++s)
      for (int64_t p = a; p < b; ++p) {
        const int64_t right = p + 1 < x.size(1) ? x[s][p + 1].item<int64_t>() : V_;
        if (hard_ >= 0) {
          const bool unsure = p == hard_ && right == mask_id();
          out[s][p - a][0] = float(unsure ? 0.0 : std::log(99.0));
          out[s][p - a][1] = float(unsure ? std::log(1.5) : 0.0);
        } else {
          const int64_t left = p > 0 ? x[s][p - 1].item<int64_t>() : V_;
          out[s][p - a] = table_[p][left][right];
        }
      }
    return out;
  }

  std::vector<std::pair<int64_t, int64_t>> windows;
  std::vector<at::Tensor> states, confidences;  // Cond::token_state and Cond::confidence per forward

 private:
  int64_t hard_;
  at::Tensor table_;
};

MdlmPipelineOptions with_decoder(MdlmPipelineOptions o, const std::string& yaml) {
  register_all();
  o.decoder.node = read_options<MdlmPipelineOptions>(parse_config_string("decoder: " + yaml + "\n", "p.yaml"),
                                                     "pipeline `mdlm`").decoder.node;
  return o;
}

MdlmPipelineOptions pipeline(int prompt, int gen, int block, int steps) {
  MdlmPipelineOptions o;
  o.prompt_length = prompt;
  o.gen_length = gen;
  o.block_length = block;
  o.steps_per_block = steps;
  return o;
}

at::Tensor run_direct(const MdlmPipeline& pipe, StandInLm& lm, int64_t B, int64_t P, DirectDriver& d) {
  PipelineInputs in;
  in.backbone = &lm;
  in.batch = B;
  in.cond.tokens = at::zeros({B, P}, at::kLong);
  return pipe.run(in, d);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(sliding_window_decoding)

// Prompt 4 + 8 tokens, the uncertain token at position 7, the right edge of the first block of 4.
BOOST_AUTO_TEST_CASE(an_uncertain_token_at_the_window_edge_waits_where_a_fixed_block_forces_it) {
  const int64_t P = 4, h = 7;
  const auto base = pipeline(4, 8, 4, 4);  // 8 steps: one token per step is the fixed schedule
  // Fixed blocks of 4, threshold 0.9: positions 4..6 commit at step 0; position 7 is the
  // block's only masked one at step 1 and commits (threshold's "at least one") as token 1,
  // its right neighbour still MASK.
  StandInLm fixed_lm(12, h);
  DirectDriver fd(fixed_lm, 5);
  auto fx = run_direct(MdlmPipeline(with_decoder(base, "{type: threshold, threshold: 0.9}")), fixed_lm, 1, P, fd);
  BOOST_CHECK_EQUAL(fx[0][h].item<int64_t>(), 1);
  BOOST_CHECK((fixed_lm.windows == std::vector<std::pair<int64_t, int64_t>>{{4, 8}, {4, 8}, {8, 12}}));
  // DCD, a window of 4 masked positions, the same rule: position 7 is deferred at steps 0 and
  // 1 while the window slides to [7, 11) (7 and the three new masked positions), and commits
  // at step 2, once position 8 is decoded, as token 0 at confidence 0.99.
  StandInLm lm(12, h);
  DirectDriver d(lm, 5);
  auto x = run_direct(MdlmPipeline(with_decoder(base, "{type: sliding_window, window: 4, commit: {type: threshold, threshold: 0.9}}")),
                      lm, 1, P, d);
  BOOST_CHECK_EQUAL(x[0][h].item<int64_t>(), 0);
  BOOST_CHECK_EQUAL(x.narrow(1, P, 8).eq(0).sum().item<int64_t>(), 8);
  BOOST_CHECK((lm.windows == std::vector<std::pair<int64_t, int64_t>>{{4, 8}, {7, 11}, {7, 12}}));
  // The token states the model saw: 7 still masked at the second forward, committed at step 2.
  BOOST_CHECK_EQUAL(lm.states[2][0][h].item<int>(), kTokenMasked);
  BOOST_CHECK_EQUAL(d.after[2][0][h].item<int64_t>(), 0);
  BOOST_CHECK_EQUAL(d.after[1][0][h].item<int64_t>(), lm.mask_id());
  // The confidence the pipeline reports at 7 (Cond::confidence, for caches) after steps 0 and 1: 0.6.
  for (size_t f : {size_t(1), size_t(2)}) {
    const double err = std::abs(lm.confidences[f][0][h].item<double>() - 0.6);
    BOOST_TEST_MESSAGE("confidence at the deferred token before forward " << f << ": |c - 0.6| = " << err);
    BOOST_CHECK_LE(err, 1e-6);
  }
  // Comparable cost: 3 forwards each over the run's 8 steps; the steps keep the fixed StepIndex.
  BOOST_CHECK_EQUAL(lm.windows.size(), fixed_lm.windows.size());
  BOOST_REQUIRE_EQUAL(d.steps.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    BOOST_CHECK_EQUAL(d.steps[size_t(i)].outer, i / 4);
    BOOST_CHECK_EQUAL(d.steps[size_t(i)].inner, i % 4);
  }
}

// The window's invariants on the random-table stand-in, batch 3 (T = 16 steps for 16 tokens):
// it starts at the first position masked in any sample; its right edge never moves back; the
// most-masked sample holds at least `window` masked positions in it (fewer only at the
// generation's end or at max_span); it exceeds max_span only when a sample lacks the
// ceil(r / k) masked positions the step budget makes it commit; every step commits at least
// one token per unfinished sample.
BOOST_AUTO_TEST_CASE(the_window_starts_at_the_first_masked_position_and_refills) {
  const int64_t P = 4, G = 16, L = P + G, B = 3;
  for (const char* yaml : {"{type: sliding_window, window: 4, commit: {type: threshold, threshold: 0.7}}",
                           "{type: sliding_window, window: 3, max_span: 5, commit: {type: threshold, threshold: 0.7}}",
                           "{type: sliding_window, window: 2, commit: {type: low_confidence}}"}) {
    BOOST_TEST_MESSAGE(yaml);
    const auto o = with_decoder(pipeline(int(P), int(G), 8, 8), yaml);
    const auto decoder = lm_decoders().build(o.decoder.node);
    const int64_t W = decoder->window().masked, span = decoder->window().max_span;
    BOOST_REQUIRE_GT(W, 0);
    StandInLm lm(L);
    DirectDriver d(lm, 5);
    auto x = run_direct(MdlmPipeline(o), lm, B, P, d);
    BOOST_CHECK_EQUAL(x.eq(lm.mask_id()).sum().item<int64_t>(), 0);
    BOOST_CHECK_EQUAL(d.steps.size(), size_t(G));
    BOOST_CHECK_LE(lm.windows.size(), size_t(G));
    int64_t prev_right = P, deferrals = 0, over_span = 0;
    for (size_t f = 0; f < lm.windows.size(); ++f) {
      const auto [a, b] = lm.windows[f];
      auto masked = lm.states[f].eq(kTokenMasked);  // [B, L] before this forward (at step f)
      BOOST_CHECK_EQUAL(a, masked.any(0).to(at::kFloat).argmax().item<int64_t>());
      BOOST_CHECK_GE(b, prev_right);
      const int64_t most = masked.narrow(1, a, b - a).sum(1).max().item<int64_t>();
      if (b < L && (span == 0 || b - a < span)) BOOST_CHECK_GE(most, W);
      if (span > 0 && b - a > span) {  // only for the budget: some sample lacked its ceil(r / k) within max_span
        ++over_span;
        const int64_t k = G - int64_t(f);
        auto need = (masked.sum(1) + (k - 1)).div(k, "floor");
        auto within = masked.narrow(1, a, std::min(span, L - a)).sum(1);
        BOOST_CHECK(within.lt(need).any().item<bool>());
      }
      auto next = f + 1 < lm.windows.size() ? lm.states[f + 1].eq(kTokenMasked) : x.eq(lm.mask_id());
      for (int64_t s = 0; s < B; ++s) {
        const int64_t before = masked[s].sum().item<int64_t>(), now = next[s].sum().item<int64_t>();
        if (before > 0) BOOST_CHECK_LT(now, before);
        // A deferral: the sample's first masked position in the window stays masked while a later one commits.
        auto in = masked[s].narrow(0, a, b - a), after = next[s].narrow(0, a, b - a);
        if (in.any().item<bool>()) {
          const int64_t first = in.to(at::kFloat).argmax().item<int64_t>();
          deferrals += after[first].item<bool>() && (in & ~after).any().item<bool>();
        }
      }
      prev_right = b;
    }
    BOOST_TEST_MESSAGE("forwards " << lm.windows.size() << " of " << G << " steps; deferrals " << deferrals
                                   << "; windows past max_span (budget) " << over_span);
  }
}

// The step budget: a commit rule that takes one token per step (threshold 0.99 on confidences
// below it) in 8 steps for 16 tokens (blocks of 8 in 4 steps: 2 per step) is topped up to
// ceil(r / k) per sample, so the run ends decoded at its last step; with max_span 2 and
// window 2 as well.
BOOST_AUTO_TEST_CASE(it_terminates_within_the_fixed_step_budget) {
  const int64_t P = 4, G = 16, B = 3;
  for (const char* yaml : {"{type: sliding_window, window: 2, commit: {type: threshold, threshold: 0.99}}",
                           "{type: sliding_window, window: 2, max_span: 2, commit: {type: threshold, threshold: 0.99}}"}) {
    StandInLm lm(P + G);
    DirectDriver d(lm, 5);
    auto x = run_direct(MdlmPipeline(with_decoder(pipeline(int(P), int(G), 8, 4), yaml)), lm, B, P, d);
    BOOST_CHECK_EQUAL(d.steps.size(), 8u);
    BOOST_CHECK_EQUAL(lm.windows.size(), 8u);
    BOOST_CHECK_EQUAL(x.eq(lm.mask_id()).sum().item<int64_t>(), 0);
    for (size_t i = 0; i < d.after.size(); ++i)  // 2 per step and sample, exactly: 16 - 2 (i + 1) left
      BOOST_CHECK_EQUAL(d.after[i].eq(lm.mask_id()).sum().item<int64_t>(), B * (G - 2 * int64_t(i + 1)));
  }
}

BOOST_FIXTURE_TEST_SUITE(on_tiny_mdlm, cachelab::testing::MdlmFixture)

// Reductions to the fixed schedule (prompt 8 + 24, batch 3, random weights), token for token:
// (a) a window as long as the generation with LLaDA's quota is one block of 24 decoded in the
// same 12 steps (the budget ceil(r / k) equals LLaDA's front-loaded quota); (b) a window of 8
// committed whole each step (threshold 1e-6) is blocks of 8 in one step each.
BOOST_AUTO_TEST_CASE(reduces_to_the_fixed_schedule) {
  auto one_block = pipeline(8, 24, 24, 12);
  auto sliding = with_decoder(pipeline(8, 24, 8, 4), "{type: sliding_window, window: 24, commit: {type: low_confidence}}");
  auto a = run_seq(model, MdlmPipeline(one_block), nullptr, run, nullptr, nullptr);
  auto b = run_seq(model, MdlmPipeline(sliding), nullptr, run, nullptr, nullptr);
  const int64_t diff_a = a.samples.ne(b.samples).sum().item<int64_t>();
  auto forwards = [](const Trajectory& t) {
    return std::count_if(t.steps.begin(), t.steps.end(), [](const StepRecord& r) { return r.flops > 0; });
  };
  BOOST_TEST_MESSAGE("(a) tokens differing " << diff_a << " of 72, forwards " << forwards(a) << " / " << forwards(b));
  BOOST_CHECK_EQUAL(diff_a, 0);
  BOOST_CHECK_EQUAL(forwards(a), 12);
  BOOST_CHECK_EQUAL(forwards(b), 12);
  BOOST_CHECK_EQUAL(b.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);

  auto whole = pipeline(8, 24, 8, 1);
  auto c = run_seq(model, MdlmPipeline(whole), nullptr, run, nullptr, nullptr);
  auto e = run_seq(model, MdlmPipeline(with_decoder(whole, "{type: sliding_window, window: 8, commit: {type: threshold, threshold: 0.000001}}")),
                   nullptr, run, nullptr, nullptr);
  const int64_t diff_b = c.samples.ne(e.samples).sum().item<int64_t>();
  BOOST_TEST_MESSAGE("(b) tokens differing " << diff_b << " of 72, FLOPs ratio " << e.flops / c.flops);
  BOOST_CHECK_EQUAL(diff_b, 0);
  BOOST_CHECK_CLOSE(e.flops, c.flops, 1e-9);  // the same windows: the same rows and logits
  // A window of 8 with one token per step is not the fixed schedule (it slides): it differs.
  auto slide8 = run_seq(model, MdlmPipeline(with_decoder(po, "{type: sliding_window, window: 8, commit: {type: low_confidence}}")),
                        nullptr, run, nullptr, nullptr);
  const int64_t diff_c = slide8.samples.ne(ref.samples).sum().item<int64_t>();
  BOOST_TEST_MESSAGE("window 8 at 2 tokens per step vs blocks of 8: tokens differing " << diff_c << " of 72");
  BOOST_CHECK_GT(diff_c, 0);
}

// The window reaches the K/V caches as Cond::context / block_end: dual_kv's exact setting
// (refresh 1) is bit for bit the uncached sliding run; its default reuses K/V between the
// refreshes every 4 steps (the fixed StepIndex) at fewer FLOPs.
BOOST_AUTO_TEST_CASE(composes_with_the_dual_kv_cache) {
  MdlmPipeline sliding(with_decoder(po, "{type: sliding_window, window: 8, commit: {type: low_confidence}}"));
  ReferenceTrace uncached;
  auto u = run_seq(model, sliding, nullptr, run, nullptr, &uncached);
  DualKvOptions exact;
  exact.refresh = 1;
  DualKvCache dual_exact(exact);
  auto t = run_seq(model, sliding, &dual_exact, run, &uncached, nullptr);
  BOOST_CHECK(at::equal(t.samples, u.samples));
  BOOST_CHECK_EQUAL(t.flops, u.flops);
  DualKvCache dual{DualKvOptions{}};
  auto td = run_seq(model, sliding, &dual, run, &uncached, nullptr);
  const double agree = td.samples.eq(u.samples).to(at::kDouble).mean().item<double>();
  BOOST_TEST_MESSAGE("dual_kv default on the sliding window: FLOPs / uncached " << td.flops / u.flops
                                                                                << ", tokens agreeing " << agree);
  BOOST_CHECK_EQUAL(td.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  BOOST_CHECK_LT(td.flops, 0.8 * u.flops);
  BOOST_CHECK_GE(agree, 0.9);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(bad_settings_are_caught_and_the_option_round_trips) {
  register_all();
  auto read = [](const std::string& yaml) {
    return read_options<MdlmPipelineOptions>(parse_config_string(yaml, "p.yaml"), "pipeline `mdlm`");
  };
  auto o = read("gen_length: 16\nblock_length: 8\nsteps_per_block: 8\n"
                "decoder: {type: sliding_window, window: 6, max_span: 12, commit: {type: factor, factor: 1.5}}\n");
  ConfigNode out = ConfigNode::make_map();
  OptionWriter w(out);
  o.fields(w);
  auto back = read(to_yaml(out));
  ConfigNode again = ConfigNode::make_map();
  OptionWriter w2(again);
  back.fields(w2);
  BOOST_CHECK_EQUAL(to_yaml(again), to_yaml(out));
  for (const char* want : {"sliding_window", "window: 6", "max_span: 12", "factor: 1.5"})
    BOOST_CHECK_MESSAGE(to_yaml(out).find(want) != std::string::npos, "missing `" << want << "` in " << to_yaml(out));
  MdlmPipeline ok(back);  // builds
  // The default rule is the paper's threshold 0.9.
  auto dflt = lm_decoders().build(read("decoder: {type: sliding_window}\n").decoder.node);
  BOOST_CHECK_EQUAL(dflt->window().masked, 16);
  using cachelab::testing::check_error;
  check_error([&] { read("decoder: {type: sliding_window, window: 0}\n"); }, {"window", ">= 1"});
  check_error([&] { read("decoder: {type: sliding_window, window: 8, max_span: 4}\n"); }, {"max_span", ">= window"});
  check_error([&] { read("decoder: {type: sliding_window, commit: {type: treshold}}\n"); }, {"treshold", "threshold"});
  check_error([&] { read("decoder: {type: sliding_window, commit: {type: threshold, threshold: 2}}\n"); }, {"threshold", "(0, 1]"});
  check_error([&] { lm_decoders().build(read("decoder: {type: sliding_window, commit: {type: sliding_window}}\n").decoder.node); },
              {"sliding_window", "commit", "not another sliding_window"});
  check_error([&] { MdlmPipeline(read("gen_length: 16\nblock_length: 8\ndecoder: {type: sliding_window, window: 32}\n")); },
              {"window", "gen_length 16"});
  // blocks of 8 in 2 steps commit 4 per step: a window of 2 cannot keep up.
  check_error([&] { MdlmPipeline(read("gen_length: 16\nblock_length: 8\nsteps_per_block: 2\n"
                                      "decoder: {type: sliding_window, window: 2}\n")); },
              {"decoder.window 2", "ceil(block_length / steps_per_block) = 4"});
}

BOOST_AUTO_TEST_SUITE_END()
