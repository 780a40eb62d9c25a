// The `mdlm_text` pipeline (models/mdlm_text.h) and the `gsm8k` metric (metrics/gsm8k.h) on
// tests/fixtures/gsm8k_mini.jsonl (four GSM8K-shaped questions written for the tests, a blank
// line among them) with the reduced Llama 3 / Qwen 3 tokenizer.json fixtures, which hold
// LLaDA's special tokens under LLaDA's ids, and a tiny random LLaDA of LLaDA-8B's vocabulary
// (126464 ids, MASK 126336; d_model 16, 1 layer).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "framework/direct_driver.h"
#include "framework/ops.h"
#include "framework/run_options.h"
#include "framework/site.h"
#include "metrics/gsm8k.h"
#include "framework/bpe_tokenizer.h"
#include "models/llada.h"
#include "models/mdlm_text.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::check_error;

namespace {

const std::string kPrompts = "tests/fixtures/gsm8k_mini.jsonl";
const std::string kLlama3 = "tests/fixtures/bpe_tokenizer/llama3/tokenizer.json";
const std::string kQwen3 = "tests/fixtures/bpe_tokenizer/qwen3/tokenizer.json";
const std::vector<std::string> kQuestions = {
    "A baker fills 12 trays with 6 rolls each and sells 45 rolls. How many rolls are left?",
    "Tom reads 15 pages every day. How many pages does he read in 4 weeks?",
    "A school buys 1,234 pencils in May and 766 in June. How many pencils does it buy?",
    "Mia picks 9 apples and gives 4 away. How many does she keep?"};
constexpr int64_t kEndOfText = 126081, kStartOfText = 126080, kHeader = 126346, kEndOfTurn = 126348, kMask = 126336;

LladaOptions tiny_llada(int mask = int(kMask)) {
  LladaOptions o;
  o.d_model = 16;
  o.n_layers = 1;
  o.n_heads = 2;
  o.mlp_hidden_size = 32;
  o.vocab_size = 126464;
  o.mask_token_id = mask;
  o.rope_theta = 10000;
  o.max_sequence_length = 128;
  return o;
}

MdlmTextOptions text_options(const std::string& tokenizer = kLlama3, bool chat = true) {
  MdlmTextOptions o;
  o.prompts = kPrompts;
  o.tokenizer = tokenizer;
  o.chat = chat;
  o.gen_length = 8;
  o.block_length = 4;
  o.steps_per_block = 2;
  return o;
}

// LLaDA's chat prompt spelled out here (not through apply_chat_template).
std::string chat_text(const std::string& q) {
  return "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n" + q +
         "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
}


at::Tensor row_of(const std::vector<int64_t>& ids) { return at::tensor(ids, at::kLong); }
std::vector<int64_t> operator+(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(mdlm_text)

BOOST_AUTO_TEST_CASE(prompts_are_the_chat_wrapped_questions_encoded_by_the_tokenizer) {
  c10::InferenceMode g;
  Llada m(tiny_llada());
  const BpeTokenizer tok(kLlama3);
  MdlmTextPipeline pipe(text_options());
  BOOST_REQUIRE_EQUAL(pipe.prompt_ids().size(), kQuestions.size());  // the blank line is skipped
  int64_t longest = 0;
  for (size_t i = 0; i < kQuestions.size(); ++i) {
    const auto want = tok.encode(chat_text(kQuestions[i]));
    const auto c = pipe.condition(m, int64_t(i), 1);
    BOOST_REQUIRE(c.tokens.defined() && c.tokens.dim() == 2 && c.tokens.size(0) == 1);
    BOOST_CHECK(at::equal(c.tokens[0], row_of(want)));
    BOOST_CHECK_EQUAL(c.tokens[0][0].item<int64_t>(), kStartOfText);
    BOOST_CHECK_EQUAL(c.tokens[0][1].item<int64_t>(), kHeader);
    longest = std::max<int64_t>(longest, int64_t(want.size()));
    BOOST_TEST_MESSAGE("question " << i << ": " << want.size() << " prompt tokens");
  }
  BOOST_CHECK_EQUAL(pipe.width(), longest + 8);
  BOOST_CHECK_EQUAL(pipe.pad_id(), kEndOfText);
  // The seed does not change the problems.
  BOOST_CHECK(at::equal(pipe.seeded_condition(m, 2, 1, 7).tokens, pipe.condition(m, 2, 1).tokens));
  // chat: false, a tokenizer without a BOS post-processor (Qwen 3's): the raw question's ids.
  const BpeTokenizer qwen(kQwen3);
  MdlmTextPipeline raw(text_options(kQwen3, false));
  BOOST_CHECK(at::equal(raw.condition(m, 1, 1).tokens[0], row_of(qwen.encode(kQuestions[1], true))));
}

BOOST_AUTO_TEST_CASE(a_batch_of_prompts_of_different_lengths_and_foreign_tokenizers_are_refused) {
  c10::InferenceMode g;
  Llada m(tiny_llada());
  MdlmTextPipeline pipe(text_options());
  BOOST_REQUIRE_NE(pipe.prompt_ids()[0].size(), pipe.prompt_ids()[1].size());
  check_error([&] { pipe.condition(m, 0, 2); }, {"one batch holds prompts of one length", "run.batch: 1"});
  check_error([&] { pipe.condition(m, 3, 2); }, {"has 4 questions", "run.samples <= 4"});
  // The runner's build checks every batch of the run up front.
  RunOptions ro;
  ro.samples = 4;
  ro.batch = 1;
  BuildContext ctx;
  ctx.run = &ro;
  MdlmTextPipeline fine(text_options(), ctx);
  ro.batch = 2;
  check_error([&] { MdlmTextPipeline p(text_options(), ctx); }, {"questions 0 and 1", "run.batch: 1"});
  ro.batch = 1;
  ro.samples = 5;
  check_error([&] { MdlmTextPipeline p(text_options(), ctx); }, {"run.samples <= 4"});
  // Llama 3's post-processor adds <|begin_of_text|> = 128000, outside LLaDA's 126464 ids.
  MdlmTextPipeline llama_raw(text_options(kLlama3, false));
  check_error([&] { llama_raw.condition(m, 0, 1); }, {"id 128000", "outside the model's vocabulary of 126464"});
  Llada other_mask(tiny_llada(126335));
  check_error([&] { pipe.condition(other_mask, 0, 1); }, {"<|mdm_mask|> = 126336", "MASK id is 126335"});
  check_error([] { MdlmTextPipeline p(text_options("tests/fixtures/missing_tokenizer.json")); }, {"missing_tokenizer.json"});
  auto no_file = text_options();
  no_file.prompts = "tests/fixtures/missing.jsonl";
  check_error([&] { MdlmTextPipeline p(no_file); }, {"missing.jsonl", "cannot be read"});
  auto unset = text_options();
  unset.prompts = "";
  check_error([&] { MdlmTextPipeline p(unset); }, {"prompts:"});
}

BOOST_AUTO_TEST_CASE(batches_of_one_decode_and_are_left_padded_to_one_width) {
  c10::InferenceMode g;
  Llada m(tiny_llada());
  testing::randomize(m, 3, 0.5);
  MdlmTextPipeline pipe(text_options());
  MdlmPipeline plain(text_options().mdlm());
  std::vector<at::Tensor> outs;
  for (int64_t i = 0; i < 4; ++i) {
    PipelineInputs in;
    in.backbone = &m;
    in.batch = 1;
    in.cond = pipe.seeded_condition(m, i, 1, 0);
    DirectDriver d(m, 0), d2(m, 0);
    auto x = pipe.run(in, d);
    auto y = plain.run(in, d2);  // the mdlm pipeline on the same prompt: the same tokens, unpadded
    BOOST_REQUIRE(x.defined() && x.dim() == 2);
    BOOST_CHECK_EQUAL(x.size(1), pipe.width());
    BOOST_CHECK_EQUAL(d.steps.size(), 4u);
    const int64_t P = int64_t(pipe.prompt_ids()[size_t(i)].size()), left = pipe.width() - P - 8;
    BOOST_CHECK(at::equal(x.narrow(1, left, P + 8), y));
    BOOST_CHECK(x.narrow(1, 0, left).eq(kEndOfText).all().item<bool>());
    BOOST_CHECK(at::equal(x.narrow(1, left, P), in.cond.tokens));
    BOOST_CHECK(!x.narrow(1, left + P, 8).eq(kMask).any().item<bool>());
    BOOST_TEST_MESSAGE("question " << i << ": " << left << " pad tokens, " << P << " prompt, 8 generated");
    outs.push_back(x);
  }
  BOOST_CHECK_EQUAL(at::cat(outs).size(0), 4);
}

BOOST_AUTO_TEST_CASE(answers_are_the_number_after_the_last_hashes_else_the_last_number) {
  BOOST_CHECK_EQUAL(gsm8k_extract_answer("so 72 - 45 = 27.\n#### 27"), "27");
  BOOST_CHECK_EQUAL(gsm8k_extract_answer("#### 1,234"), "1234");
  BOOST_CHECK_EQUAL(gsm8k_extract_answer("It costs $18.00 in all"), "18");
  BOOST_CHECK_EQUAL(gsm8k_extract_answer("#### 6 #### -3 apples, then 9"), "-3");
  BOOST_CHECK_EQUAL(gsm8k_extract_answer("first 5, then 12.50, answer 007"), "7");
  BOOST_CHECK_EQUAL(gsm8k_extract_answer("4 apples #### and no number after"), "4");  // nothing after ####: the last number
  BOOST_CHECK_EQUAL(gsm8k_extract_answer("no number"), "");
}

BOOST_AUTO_TEST_CASE(the_metric_grades_generations_after_the_prompt_against_the_answers) {
  c10::InferenceMode g;
  const BpeTokenizer tok(kLlama3);
  Gsm8kOptions o;
  o.prompts = kPrompts;
  o.tokenizer = kLlama3;
  Gsm8kMetric metric(o);
  MdlmTextOptions po = text_options();
  po.gen_length = 32;
  po.block_length = 32;
  po.steps_per_block = 1;
  MdlmTextPipeline pipe(po);
  const int64_t W = pipe.width();
  // A sample as the pipeline writes it: pad, the chat prompt, the generation (padded to 32 with EOS).
  auto sample = [&](int64_t i, const std::string& text, std::vector<int64_t> extra = {}) {
    std::vector<int64_t> gen = tok.encode(text) + extra;
    BOOST_REQUIRE_LE(gen.size(), 32u);
    gen.resize(32, kEndOfText);
    const auto& p = pipe.prompt_ids()[size_t(i)];
    std::vector<int64_t> row(size_t(W) - p.size() - 32, kEndOfText);
    return row_of(row + p + gen);
  };
  const int64_t unknown = 126400;  // inside the model's vocabulary, not the tokenizer's: decodes to nothing
  auto right = at::stack({sample(0, "72 - 45 = 27\n#### 27<|eot_id|>#### 99"),
                          sample(1, "15 * 28 = 420 pages.\n#### 420", {unknown}),
                          sample(2, "1,234 + 766 = 2,000\n#### 2,000<|eot_id|>"),
                          sample(3, "She keeps 9 - 4 = 5 apples.<|eot_id|>")});  // no ####: the last number
  auto wrong = at::stack({sample(0, "#### 72<|eot_id|>"), sample(1, "#### 420.5"),
                          sample(2, "1,234 + 766 = 2000 pencils, not 1,999.<|eot_id|>"),
                          sample(3, "The answer is 5<|eot_id|>#### 5")});
  BOOST_CHECK_EQUAL(metric.generation(right[0], 0), "72 - 45 = 27\n#### 27");
  BOOST_CHECK_EQUAL(metric.generation(right[1], 1), "15 * 28 = 420 pages.\n#### 420");
  MetricInputs in;
  in.samples = right;
  auto out = metric.compute(in);
  BOOST_REQUIRE_EQUAL(out.size(), 1u);
  BOOST_CHECK_EQUAL(out[0].first, "gsm8k_accuracy");
  BOOST_CHECK_EQUAL(out[0].second, 1.0);
  in.samples = wrong;
  BOOST_CHECK_EQUAL(metric.compute(in)[0].second, 0.25);  // only the last: "5" before its <|eot_id|>
  // Against a reference: half of them right.
  in.samples = at::cat({wrong.narrow(0, 0, 2), right.narrow(0, 2, 2)});
  in.reference = right;
  std::map<std::string, double> v;
  for (auto& [k, x] : metric.compute(in)) v[k] = x;
  BOOST_CHECK_EQUAL(v.at("gsm8k_accuracy"), 0.5);
  BOOST_CHECK_EQUAL(v.at("gsm8k_accuracy_reference"), 1.0);
  BOOST_CHECK_EQUAL(v.at("gsm8k_accuracy_loss"), 0.5);
  BOOST_CHECK_EQUAL(v.at("gsm8k_accuracy_retained"), 0.5);
  // A raw (chat: false) prompt is recognised too.
  const auto raw = tok.encode(kQuestions[3], true) + tok.encode("#### 5<|eot_id|>");
  BOOST_CHECK_EQUAL(metric.generation(row_of(raw), 3), "#### 5");
  // Samples without their line: more samples than lines, a sample of another line.
  in.reference = at::Tensor();
  in.samples = at::cat({right, right.narrow(0, 0, 1)});
  check_error([&] { metric.compute(in); }, {"5 samples", "has 4 questions"});
  in.samples = at::stack({right[1], right[0]});
  check_error([&] { metric.compute(in); }, {"sample 0 does not start with the question of line 1"});
  in.samples = at::randn({2, 3});
  check_error([&] { metric.compute(in); }, {"token ids"});
}

BOOST_AUTO_TEST_SUITE_END()
