// Learn2PD (models/learn2pd.h) and the mdlm pipeline's End-of-Text Prediction: the `learn2pd`
// decoder commits exactly the masked positions its filter trusts (plus the most confident
// one); a filter made for another block length, or a missing file, is refused with the
// command that makes one; EoTP fills everything after a sample's first committed EOS and the
// blocks left all EOS run no forward, with the same final tokens as without it; the trainer
// writes a filter the decoder loads; the options round-trip and the new pipeline keys stay
// out of resolved configs at their defaults (run ids do not move).
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/direct_driver.h"
#include "framework/registries.h"
#include "framework/safetensors.h"
#include "models/learn2pd.h"
#include "models/mdlm_pipeline.h"
#include "models/tiny_mdlm.h"
#include "tests/models/stand_in_lm.h"
#include "tests/test_util.h"

using namespace cachelab;

namespace {

// A filter of block length N whose logits are `bias` whatever the input.
std::string write_filter(const std::string& name, const std::vector<float>& bias, int hidden = 3) {
  const int64_t N = int64_t(bias.size());
  const std::string path = (std::filesystem::temp_directory_path() / name).string();
  write_safetensors(path,
                    {{"w1", at::zeros({hidden, 2 * N})}, {"b1", at::zeros({hidden})}, {"w2", at::zeros({N, hidden})},
                     {"b2", at::tensor(bias)}},
                    {{"format", "cachelab learn2pd filter 1"}, {"block_length", std::to_string(N)}});
  return path;
}

// A step over one block: logits [1, N, 3] with the argmax token 1 at confidence `conf[i]`.
UnmaskStep step_of(const std::vector<double>& conf, const std::vector<bool>& masked) {
  const int64_t N = int64_t(conf.size());
  auto logits = at::zeros({1, N, 3}, at::kFloat);
  for (int64_t i = 0; i < N; ++i) {  // softmax(l, 0, 0) at token 1 = conf  <=>  l = log(2 conf / (1 - conf))
    logits[0][i][1] = float(std::log(2 * conf[size_t(i)] / (1 - conf[size_t(i)])));
  }
  UnmaskStep s;
  s.logits = logits;
  s.masked = at::zeros({1, N}, at::kBool);
  for (int64_t i = 0; i < N; ++i) s.masked[0][i] = bool(masked[size_t(i)]);
  s.noise = at::zeros({1, N});
  s.steps = int(N);
  s.quota = 1;
  return s;
}

at::Tensor row(const at::Tensor& t) { return t[0].to(at::kLong); }

// A stand-in masked LM over tokens {0 = EOS, 1, 2}, MASK = 3: the first `answer` generated
// positions predict token 1 (confidence rising to the right), every later one EOS, the first
// EOS most confident of all. Counts its forwards.
class AnswerThenEos final : public cachelab::testing::StandInMaskedLm {
 public:
  AnswerThenEos(int64_t prompt, int64_t length, int64_t answer) : StandInMaskedLm(length, 3), P_(prompt), A_(answer) {}
  at::Tensor logits(const at::Tensor& x, const Cond& c) override {
    const int64_t B = x.size(0), a = c.context, b = c.block_end;
    auto out = at::zeros({B, b - a, 3}, at::kFloat);
    for (int64_t p = a; p < b; ++p) {
      const int64_t g = p - P_;
      if (g < A_) out.select(1, p - a).select(1, 1).fill_(float(2 + 0.1 * double(g)));
      else out.select(1, p - a).select(1, 0).fill_(float(g == A_ ? 9 : 5));
    }
    return out;
  }

 private:
  int64_t P_, A_;
};

at::Tensor decode(bool eot, int& forwards) {
  const int64_t P = 4, G = 12, B = 2;
  AnswerThenEos lm(P, P + G, 3);
  MdlmPipelineOptions o;
  o.gen_length = int(G);
  o.block_length = 4;
  o.steps_per_block = 4;  // one token per step, the most confident first
  o.end_of_text = eot;
  o.eos_id = 0;
  const MdlmPipeline pipe(o);
  DirectDriver d(lm, 3);
  PipelineInputs in;
  in.backbone = &lm;
  in.batch = B;
  in.cond.tokens = at::full({B, P}, 2, at::kLong);
  auto x = pipe.run(in, d);
  forwards = lm.forwards;
  return x;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(learn2pd)

BOOST_AUTO_TEST_CASE(the_decoder_commits_what_its_filter_trusts_and_the_most_confident) {
  register_all();
  const std::vector<double> conf = {0.6, 0.95, 0.7, 0.8};
  const std::vector<bool> masked = {true, true, false, true};
  {  // trusts every position: every masked one commits
    Learn2pdOptions o;
    o.filter = write_filter("l2pd_all.safetensors", {10, 10, 10, 10});
    auto c = Learn2pdDecoder(o).choose(step_of(conf, masked));
    BOOST_CHECK(at::equal(row(c.unmask), at::tensor({1, 1, 0, 1}, at::kLong)));
    BOOST_CHECK(at::equal(row(c.tokens), at::tensor({1, 1, 1, 1}, at::kLong)));
  }
  {  // trusts none: the most confident masked position alone (1, at 0.95)
    Learn2pdOptions o;
    o.filter = write_filter("l2pd_none.safetensors", {-10, -10, -10, -10});
    auto c = Learn2pdDecoder(o).choose(step_of(conf, masked));
    BOOST_CHECK(at::equal(row(c.unmask), at::tensor({0, 1, 0, 0}, at::kLong)));
  }
  {  // per position, at the threshold: sigmoid(0) = 0.5 commits at threshold 0.5, not at 0.9
    Learn2pdOptions o;
    o.filter = write_filter("l2pd_mixed.safetensors", {0, -10, 10, -10});
    o.threshold = 0.5;
    BOOST_CHECK(at::equal(row(Learn2pdDecoder(o).choose(step_of(conf, masked)).unmask), at::tensor({1, 1, 0, 0}, at::kLong)));
    o.threshold = 0.9;
    BOOST_CHECK(at::equal(row(Learn2pdDecoder(o).choose(step_of(conf, masked)).unmask), at::tensor({0, 1, 0, 0}, at::kLong)));
  }
}

BOOST_AUTO_TEST_CASE(features_are_confidences_with_committed_positions_certain) {
  auto s = step_of({0.6, 0.95, 0.7, 0.8}, {true, true, false, true});
  auto f = learn2pd_features(s.logits, s.masked)[0];
  const std::vector<double> want = {0.6, 0.95, 1.0, 0.8, 1, 1, 0, 1};
  for (size_t i = 0; i < want.size(); ++i) BOOST_CHECK_SMALL(f[int64_t(i)].item<double>() - want[i], 1e-6);
}

BOOST_AUTO_TEST_CASE(a_filter_for_another_block_or_a_missing_file_is_refused) {
  Learn2pdOptions o;
  o.filter = write_filter("l2pd_n3.safetensors", {1, 1, 1});
  const Learn2pdDecoder d(o);
  cachelab::testing::check_error([&] { d.choose(step_of({0.6, 0.9, 0.7, 0.8}, {true, true, true, true})); },
                                          {"blocks of 3", "this decoding has 4", "block_length"});
  o.filter = "/nonexistent/filter.safetensors";
  cachelab::testing::check_error([&] { Learn2pdDecoder bad(o); },
                                          {"not found", "cachelab train configs/train/learn2pd-llada-tasks.yaml"});
}

// 4 prompt + 12 generated tokens in blocks of 4, one token per step: the answer is 3 tokens,
// then EOS. The first EOS (most confident) commits at step 0; with EoTP everything after it is
// EOS at once, block 0 ends after the answer's 3 more steps and blocks 1 and 2 run no forward:
// 4 forwards instead of 12.
BOOST_AUTO_TEST_CASE(end_of_text_prediction_skips_the_padding_and_keeps_the_tokens) {
  int plain = 0, eot = 0;
  auto a = decode(false, plain), b = decode(true, eot);
  BOOST_CHECK_EQUAL(plain, 12);
  BOOST_CHECK_EQUAL(eot, 4);
  BOOST_CHECK(at::equal(a, b));
  BOOST_CHECK(at::equal(a[0].narrow(0, 4, 12), at::tensor({1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, at::kLong)));
}

BOOST_AUTO_TEST_CASE(end_of_text_needs_its_token) {
  MdlmPipelineOptions o;
  o.end_of_text = true;
  cachelab::testing::check_error([&] { MdlmPipeline p(o); }, {"end_of_text", "eos_id"});
  register_all();
  cachelab::testing::check_error(
      [] { pipelines().resolve(parse_config_string("type: mdlm\nend_of_text: true\n", "e.yaml")); }, {"eos_id"});
}

BOOST_AUTO_TEST_CASE(the_trainer_writes_a_filter_the_decoder_loads) {
  TinyMdlmOptions mo;
  mo.vocab_size = 56;
  mo.hidden_size = 16;
  mo.max_length = 32;
  TinyMdlm lm(mo);
  Learn2pdTrainOptions o;
  o.task.task = "addition";
  o.task.digits = 2;
  o.problems = 8;
  o.batch = 4;
  o.block_length = 4;
  o.hidden = 8;
  o.iterations = 20;
  o.output = (std::filesystem::temp_directory_path() / "l2pd_trained.safetensors").string();
  train_learn2pd(lm, o, "model: learn2pd\n", "");
  auto f = Learn2pdFilter::load(o.output);
  BOOST_CHECK_EQUAL(f.block_length(), 4);
  BOOST_CHECK_EQUAL(f.w1.size(0), 8);
  BOOST_CHECK_EQUAL(f.w1.size(1), 8);
  BOOST_CHECK(at::isfinite(f.w2).all().item<bool>());
}

BOOST_AUTO_TEST_CASE(options_round_trip_and_new_pipeline_keys_stay_out_at_their_defaults) {
  register_all();
  const std::string text = "type: learn2pd\nfilter: f.safetensors\nthreshold: 0.8\n";
  auto node = lm_decoders().resolve(parse_config_string(text, "d.yaml"));
  BOOST_CHECK_EQUAL(to_yaml(lm_decoders().resolve(parse_config_string(to_yaml(node), "d2.yaml"))), to_yaml(node));
  auto plain = to_yaml(pipelines().resolve(parse_config_string("type: mdlm\n", "p.yaml")));
  BOOST_CHECK(plain.find("end_of_text") == std::string::npos && plain.find("eos_id") == std::string::npos);
  auto on = to_yaml(pipelines().resolve(parse_config_string("type: mdlm\nend_of_text: true\neos_id: 7\n", "p.yaml")));
  BOOST_CHECK(on.find("end_of_text: true") != std::string::npos && on.find("eos_id: 7") != std::string::npos);
  cachelab::testing::check_error(
      [] { lm_decoders().resolve(parse_config_string("type: learn2pd\nthreshold: 0.8\n", "d.yaml")); }, {"filter"});
}

BOOST_AUTO_TEST_SUITE_END()
