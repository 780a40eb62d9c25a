// dInfer's iteration smoothing (the mdlm pipeline's smooth_weight; llada's soft inputs) on a small
// random llada. What it must show: a MASK position whose soft input is all weight on token v is
// that token to the model (every logit as with v written there), soft weights elsewhere are
// ignored; the decaying threshold floor makes the first forward commit one token where the plain
// threshold commits the whole block; the soft inputs reach the model (a quota decoder, which
// ignores the floor, decodes other tokens with them); bad settings are named (that references
// decode without smoothing: tests/framework/test_experiment.cpp).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <boost/test/unit_test.hpp>

#include "framework/config.h"
#include "framework/registries.h"
#include "models/llada.h"
#include "models/lm_decoders.h"
#include "models/mdlm_pipeline.h"
#include "tests/caches/mdlm_fixture.h"
#include "tests/models/small_llada.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::run_seq;
using cachelab::testing::small_llada;
using cachelab::testing::three_samples;

namespace {

constexpr int64_t kMask = 39, kV = 40;

LladaOptions small() { return small_llada(7); }

at::Tensor logits(Llada& m, const at::Tensor& x, const at::Tensor& soft = at::Tensor()) {
  PassThroughHooks hooks(m.linears());
  at::NoGradGuard g;
  Cond c;
  c.soft_tokens = soft;
  return m.forward(x, at::zeros({x.size(0)}), c, hooks);
}

MdlmPipelineOptions pipeline(double smooth_weight) {
  MdlmPipelineOptions o;
  o.prompt_length = 6;
  o.gen_length = 8;
  o.block_length = 8;
  o.steps_per_block = 8;
  o.smooth_weight = smooth_weight;
  o.smooth_init = smooth_weight;
  return o;
}


std::shared_ptr<const LmDecoder> threshold(double t) {
  ThresholdDecodingOptions o;
  o.threshold = t;
  return std::make_shared<ThresholdDecoder>(o);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(iteration_smoothing)

BOOST_AUTO_TEST_CASE(all_weight_on_a_token_is_that_token_and_weights_off_mask_are_ignored) {
  Llada m(small());
  BOOST_CHECK(m.soft_inputs());
  auto gen = at::detail::createCPUGenerator(3);
  auto x = at::randint(kMask, {2, 12}, gen);
  x.narrow(1, 8, 4).fill_(kMask);
  auto soft = at::zeros({2, 12, kV});
  soft[0][9][5] = 1.0;
  soft[1][9][7] = 1.0;
  soft[0][2][11] = 0.5;  // a token position: ignored
  auto y = x.clone();
  y[0][9] = 5;
  y[1][9] = 7;
  BOOST_CHECK_SMALL((logits(m, x, soft) - logits(m, y)).abs().max().item<double>(), 1e-5);
  BOOST_CHECK(at::equal(logits(m, x, at::zeros({2, 12, kV})), logits(m, x)));
  cachelab::testing::check_error([&] { logits(m, x, at::zeros({2, 12, 3})); }, {"soft_tokens"});
}

BOOST_AUTO_TEST_CASE(the_threshold_floor_starts_at_one_and_the_soft_inputs_reach_the_model) {
  Llada m(small());
  const RunOptions run = three_samples();
  auto after_first = [&](double smooth, double decay = 0.02) {  // generated tokens committed by the first forward
    MdlmPipelineOptions o = pipeline(smooth);
    o.threshold_decay = decay;
    MdlmPipeline pipe(o, threshold(0.01));
    ReferenceTrace trace;
    run_seq(m, pipe, nullptr, run, nullptr, &trace);
    return trace.x_after_step[0].narrow(1, 6, 8).ne(kMask).sum(1);
  };
  BOOST_CHECK(at::equal(after_first(0.0), at::full({3}, 8, at::kLong)));  // everything passes 0.01
  BOOST_CHECK(at::equal(after_first(0.3), at::full({3}, 1, at::kLong)));  // floor 1: the most confident only
  BOOST_CHECK(at::equal(after_first(0.3, 0.0), at::full({3}, 8, at::kLong)));  // decay 0: no floor
  // Low-confidence remasking ignores the floor: the soft inputs alone change what it decodes.
  auto decode = [&](double smooth) {
    MdlmPipelineOptions o = pipeline(smooth);
    o.decoder = ComponentSpec{"lm_decoder", {}};
    MdlmPipeline pipe(o);
    return run_seq(m, pipe, nullptr, run, nullptr, nullptr).samples;
  };
  BOOST_CHECK(!at::equal(decode(1.0), decode(0.0)));
}

BOOST_AUTO_TEST_CASE(bad_settings_and_models_without_soft_inputs_are_named) {
  cachelab::testing::check_error(
      [] { pipelines().resolve(parse_config_string("type: mdlm\nsmooth_weight: 1.5\n", "exp.yaml")); },
      {"smooth_weight", "[0, 1]"});
  cachelab::testing::check_error(
      [] { pipelines().resolve(parse_config_string("type: mdlm\nthreshold_decay: -1\n", "exp.yaml")); },
      {"threshold_decay", ">= 0"});
  // A model without soft inputs is refused.
  cachelab::testing::MdlmFixture f;
  MdlmPipelineOptions o = f.po;
  o.smooth_weight = 0.3;
  MdlmPipeline pipe(o);
  cachelab::testing::check_error([&] { run_seq(f.model, pipe, nullptr, f.run, nullptr, nullptr); }, {"soft inputs"});
}

BOOST_AUTO_TEST_SUITE_END()
