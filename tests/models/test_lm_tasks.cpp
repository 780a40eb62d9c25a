// The exactly-checkable LM tasks (framework/lm_tasks.h), the exact_match metric, the mdlm
// pipeline's task prompts and the masked-diffusion LM trainer's objective (models/train_lm.h).
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <fstream>
#include <set>

#include "framework/config.h"
#include "framework/error.h"
#include "framework/registries.h"
#include "framework/registry.h"
#include "metrics/exact_match.h"
#include "framework/lm_tasks.h"
#include "models/mdlm_pipeline.h"
#include "models/tiny_mdlm.h"
#include "framework/safetensors.h"
#include "models/train_lm.h"
#include "tests/test_util.h"
#include "tools/components.h"

using namespace cachelab;

namespace {

const std::vector<std::string> kAll = {"addition", "multiplication", "sorting", "reversal", "word_problems"};

LmTask task_named(const std::string& name) {
  LmTaskOptions o;
  o.task = name;
  return LmTask(o);
}

// A wrong answer of the same shape: the last character of the final answer changed.
std::string perturbed(const std::string& answer) {
  std::string s = answer;
  char& c = s.back();
  c = std::isdigit(static_cast<unsigned char>(c)) ? char('0' + (c - '0' + 1) % 10) : char('a' + (c - 'a' + 1) % 26);
  return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(lm_tasks)

BOOST_AUTO_TEST_CASE(the_splits_never_overlap) {
  for (const auto& name : kAll) {
    const LmTask task = task_named(name);
    std::set<std::string> train, test;
    for (const auto& p : task.problems(false, 0, 3000)) {
      BOOST_CHECK(!LmTask::in_test_split(p.key));
      train.insert(p.key);
    }
    for (const auto& p : task.problems(true, 0, 400)) {
      BOOST_CHECK(LmTask::in_test_split(p.key));
      test.insert(p.key);
    }
    size_t both = 0;
    for (const auto& k : test) both += train.count(k);
    BOOST_TEST_MESSAGE(name << ": " << train.size() << " distinct training and " << test.size()
                            << " distinct test problems, " << both << " shared");
    BOOST_CHECK_EQUAL(both, 0u);
    BOOST_CHECK_GT(test.size(), 100u);  // the test split is not a handful of repeats
    // Deterministic: the same index gives the same problem, another seed other problems.
    BOOST_CHECK_EQUAL(task.problem(true, 7).prompt, task.problem(true, 7).prompt);
    LmTaskOptions o;
    o.task = name;
    o.task_seed = 1;
    BOOST_CHECK_NE(LmTask(o).problem(true, 7).prompt + LmTask(o).problem(true, 8).prompt,
                   task.problem(true, 7).prompt + task.problem(true, 8).prompt);
  }
}

BOOST_AUTO_TEST_CASE(checkers_accept_the_answers_and_reject_perturbed_ones) {
  for (const auto& name : kAll) {
    const LmTask task = task_named(name);
    int accepted = 0, rejected = 0, n = 0;
    for (bool test : {false, true})
      for (const auto& p : task.problems(test, 0, 300)) {
        ++n;
        accepted += task.check(p.prompt, p.answer);
        rejected += !task.check(p.prompt, perturbed(p.answer));
        rejected += !task.check(p.prompt, p.answer + (name == "word_problems" ? "0" : "a"));
        rejected += !task.check(p.prompt, "");
      }
    BOOST_TEST_MESSAGE(name << ": " << accepted << "/" << n << " answers accepted, " << rejected << "/" << 3 * n
                            << " perturbed answers rejected; e.g. \"" << task.problem(true, 0).prompt << "\" -> \""
                            << task.problem(true, 0).answer << "\"");
    BOOST_CHECK_EQUAL(accepted, n);
    // Every answer is unique, and every perturbation changes the string.
    BOOST_CHECK_EQUAL(rejected, 3 * n);
  }
  // Word problems grade the final `#### N` line only.
  const LmTask wp = task_named("word_problems");
  const auto p = wp.problem(true, 3);
  const auto nl = p.answer.rfind('\n');
  BOOST_CHECK(wp.check(p.prompt, "wrong work\n" + p.answer.substr(nl + 1)));
  BOOST_CHECK(!wp.check(p.prompt, p.answer.substr(0, nl)));
  BOOST_CHECK_THROW(task_named("addition").check("12*3=", "36"), Error);  // not an addition prompt
}

BOOST_AUTO_TEST_CASE(tokenizer_round_trip_and_fixed_lengths) {
  BOOST_CHECK_EQUAL(CharTokenizer::vocab_size(), 54);
  for (const auto& name : kAll) {
    const LmTask task = task_named(name);
    const auto problems = task.problems(true, 0, 50);
    auto prompts = task.encode_prompts(problems), answers = task.encode_answers(problems);
    BOOST_CHECK_EQUAL(prompts.size(1), task.prompt_length());
    BOOST_CHECK_EQUAL(answers.size(1), task.gen_length());
    BOOST_CHECK_EQUAL(task.gen_length() % 8, 0);
    for (int64_t i = 0; i < 50; ++i) {
      auto row = [](const at::Tensor& t) { return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()); };
      const auto pr = row(prompts[i].contiguous()), an = row(answers[i].contiguous());
      BOOST_CHECK_EQUAL(CharTokenizer::decode(pr, false), problems[size_t(i)].prompt);
      BOOST_CHECK_EQUAL(CharTokenizer::decode(an, true), problems[size_t(i)].answer);
      BOOST_CHECK_EQUAL(an.back(), CharTokenizer::kEos);  // at least one EOS
      BOOST_CHECK_EQUAL(pr.back(), CharTokenizer::encode(problems[size_t(i)].prompt.substr(problems[size_t(i)].prompt.size() - 1))[0]);
    }
  }
  BOOST_CHECK_EQUAL(CharTokenizer::decode(CharTokenizer::encode("ann has 12 pens.\n#### 7")), "ann has 12 pens.\n#### 7");
  BOOST_CHECK_THROW(CharTokenizer::encode("Ann"), Error);  // no capitals
}

BOOST_AUTO_TEST_CASE(exact_match_metric_and_pipeline_prompts) {
  LmTaskOptions o;
  o.task = "addition";
  o.digits = 2;
  const LmTask task(o);
  const auto problems = task.problems(true, 0, 4);
  auto tokens = at::cat({task.encode_prompts(problems), task.encode_answers(problems)}, 1);
  ExactMatchMetric metric(o);
  MetricInputs in;
  in.samples = tokens.clone();
  in.reference = tokens.clone();
  // Sample 1's last answer character is wrong.
  const auto wrong = CharTokenizer::encode(perturbed(problems[1].answer));
  in.samples[1][task.prompt_length() + int64_t(wrong.size()) - 1] = wrong.back();
  auto r = metric.compute(in);
  BOOST_TEST_MESSAGE("exact_match " << r[0].second << ", reference " << r[1].second);
  BOOST_CHECK_EQUAL(r[0].first, "exact_match");
  BOOST_CHECK_CLOSE(r[0].second, 0.75, 1e-9);
  BOOST_CHECK_CLOSE(r[1].second, 1.0, 1e-9);
  // Without a task, each sample's task is recognised from its prompt.
  LmTaskOptions any;
  any.digits = 2;
  ExactMatchMetric recognising(any);
  BOOST_CHECK_CLOSE(recognising.compute(in)[0].second, 0.75, 1e-9);
  in.samples = at::full({1, 16}, CharTokenizer::kEos, at::kLong);  // no task's prompt
  BOOST_CHECK_THROW(recognising.compute(in), Error);
  LmTaskOptions mix;
  mix.task = "mix";
  BOOST_CHECK_THROW(ExactMatchMetric{mix}, Error);
  for (const auto& name : kAll) {  // every task's prompts are recognised as that task's only
    std::vector<LmTask> tasks;
    for (const auto& n : kAll) tasks.push_back(task_named(n));
    const LmTask t = task_named(name);
    const auto ps = t.problems(true, 0, 20);
    auto rows = at::cat({t.encode_prompts(ps), t.encode_answers(ps)}, 1);
    int ok = 0;
    for (int64_t i = 0; i < 20; ++i) {
      const int k = recognise_task(tasks, rows[i]);
      ok += k >= 0 && tasks[size_t(k)].name() == name;
    }
    BOOST_CHECK_EQUAL(ok, 20);
  }

  // The pipeline's condition: test problems [start, start + n).
  MdlmPipelineOptions po;
  po.task = o;
  po.gen_length = 8;
  po.block_length = 8;
  MdlmPipeline pipe(po);
  TinyMdlmOptions mo;
  mo.vocab_size = int(CharTokenizer::vocab_size());
  mo.hidden_size = 16;
  mo.max_length = 16;
  TinyMdlm model(mo);
  Cond c = pipe.condition(model, 2, 2);
  BOOST_CHECK(c.tokens.equal(task.encode_prompts(task.problems(true, 2, 2))));
  po.gen_length = 4;
  po.block_length = 4;
  BOOST_CHECK_THROW(MdlmPipeline(po).condition(model, 0, 1), Error);  // shorter than the task's answers
}

BOOST_AUTO_TEST_CASE(options_round_trip) {
  register_components();
  const std::string yaml = "type: mdlm\ngen_length: 40\nblock_length: 8\nsteps_per_block: 8\ntask: word_problems\n";
  ConfigNode first = pipelines().resolve(parse_config_string(yaml, "test.yaml"));
  const std::string out = to_yaml(first);
  BOOST_CHECK(first.find("task") && first.find("task")->scalar == "word_problems");
  BOOST_CHECK(first.find("digits"));
  BOOST_CHECK_EQUAL(to_yaml(pipelines().resolve(parse_config_string(out, "again.yaml"))), out);
  BOOST_CHECK_THROW(pipelines().resolve(parse_config_string("type: mdlm\ntask: additon\n", "t.yaml")), Error);
  BOOST_CHECK_THROW(pipelines().resolve(parse_config_string("type: mdlm\ntask: mix\n", "t.yaml")), Error);
  BOOST_CHECK_THROW(metrics().resolve(parse_config_string("type: exact_match\ndigits: 0\n", "t.yaml")), Error);
  BOOST_CHECK(metrics().resolve(parse_config_string("type: exact_match\ntask: sorting\nlength: 8\n", "t.yaml")).find("length"));

  auto train = read_checked<LmTrainOptions>(
      parse_config_string("steps: 10\ntask: mix\nmix_weights: [1, 2, 1, 1, 3]\ndigits: 4\nmask_eps: 0.01\n", "t.yaml"), "train");
  BOOST_CHECK_EQUAL(train.steps, 10);
  BOOST_CHECK_EQUAL(train.task.digits, 4);
  BOOST_CHECK_EQUAL(train.task.mix_weights.size(), 5u);
  ConfigNode written = ConfigNode::make_map("train");
  OptionWriter w(written);
  train.fields(w);
  auto again = read_checked<LmTrainOptions>(parse_config_string(to_yaml(written), "again.yaml"), "train");
  BOOST_CHECK_EQUAL(again.task.mix_weights.size(), 5u);
  BOOST_CHECK_CLOSE(again.mask_eps, 0.01, 1e-9);
  BOOST_CHECK_THROW(read_checked<LmTrainOptions>(parse_config_string("mix_weights: [1, 2]\n", "t.yaml"), "train"), Error);
  BOOST_CHECK_THROW(read_checked<LmTrainOptions>(parse_config_string("dataset: mnist\n", "t.yaml"), "train"), Error);
  const LmTaskSet set(train.task);
  BOOST_CHECK_EQUAL(set.tasks.size(), 5u);
  BOOST_CHECK_CLOSE(set.weights[4], 3.0 / 8.0, 1e-9);
}

BOOST_AUTO_TEST_CASE(sft_loss_decreases_on_a_fixed_batch) {
  const auto t0 = std::chrono::steady_clock::now();
  at::set_num_threads(1);
  TinyMdlmOptions mo;
  mo.vocab_size = int(CharTokenizer::vocab_size());
  mo.hidden_size = 32;
  mo.depth = 1;
  mo.max_length = 16;
  TinyMdlm model(mo);
  LmTaskOptions o;
  o.task = "addition";
  o.digits = 2;
  const LmTask task(o);
  const auto problems = task.problems(false, 0, 16);
  auto prompt = task.encode_prompts(problems), answer = task.encode_answers(problems);
  auto loss_at = [&](bool grad) {
    auto gen = at::detail::createCPUGenerator(7);  // the same t and masks every time
    if (grad) return masked_lm_loss(model, prompt, answer, gen, 1e-3).mean();
    torch::NoGradGuard g;
    return masked_lm_loss(model, prompt, answer, gen, 1e-3).mean();
  };
  const double before = loss_at(false).item<double>();
  torch::optim::AdamW opt(model.trainable_parameters(), torch::optim::AdamWOptions(3e-3));
  for (int s = 0; s < 40; ++s) {
    opt.zero_grad();
    loss_at(true).backward();
    opt.step();
  }
  const double after = loss_at(false).item<double>();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST_MESSAGE("SFT loss on a fixed batch: " << before << " -> " << after << " after 40 AdamW steps (" << secs
                                                   << " s)");
  BOOST_CHECK(std::isfinite(before) && before > 0);
  BOOST_CHECK_LT(after, 0.5 * before);
  // A model whose vocabulary cannot hold the tokenizer's ids is refused.
  TinyMdlmOptions small = mo;
  small.vocab_size = 20;
  TinyMdlm tiny(small);
  LmTrainOptions to;
  to.task = o;
  BOOST_CHECK_THROW(train_masked_lm(tiny, to, "test"), Error);
}

BOOST_AUTO_TEST_CASE(trainer_checkpoints_resumes_and_exports_loadable_weights) {
  cachelab::testing::TempDir d;
  TinyMdlmOptions mo;
  mo.vocab_size = int(CharTokenizer::vocab_size());
  mo.hidden_size = 16;
  mo.depth = 1;
  mo.max_length = 20;
  LmTrainOptions o;
  o.task.task = "mix";
  o.task.digits = 2;
  o.task.length = 4;
  o.task.mix_tasks = {"addition", "reversal"};
  o.task.mix_weights = {3, 1};
  o.steps = 4;
  o.batch_size = 8;
  o.warmup = 2;
  o.checkpoint_every = 2;
  o.log_every = 2;
  o.checkpoint_dir = d.path + "/ckpt";
  o.output = d.path + "/out.safetensors";
  {
    TinyMdlm model(mo);
    train_masked_lm(model, o, "test");
  }
  BOOST_CHECK_EQUAL(read_safetensors(o.output).metadata.at("step"), "4");
  BOOST_CHECK_EQUAL(read_safetensors(o.output).metadata.at("format"), "cachelab mdlm");
  o.steps = 6;
  {
    TinyMdlm model(mo);
    train_masked_lm(model, o, "test");  // resumes at 4
  }
  BOOST_CHECK_EQUAL(read_safetensors(o.output).metadata.at("step"), "6");
  std::ifstream csv(o.checkpoint_dir + "/loss.csv");
  std::string line;
  int rows = -1;
  while (std::getline(csv, line)) ++rows;
  BOOST_CHECK_EQUAL(rows, 6);  // header + one row per step, none twice across the resume
  TinyMdlm fresh(mo);
  mo.weights = o.output;
  TinyMdlm trained(mo);  // the exported EMA weights load into the backbone, and differ from the init
  auto tensor = [](TinyMdlm& m, const std::string& name) {
    for (auto& [n, t] : m.named_tensors())
      if (n == name) return t;
    return at::Tensor();
  };
  const double moved = (tensor(trained, "head.weight") - tensor(fresh, "head.weight")).abs().max().item<double>();
  BOOST_TEST_MESSAGE("trained head.weight moved from the init by up to " << moved);
  BOOST_CHECK_GT(moved, 1e-4);
  // A task longer than the model's positions is refused before anything runs.
  o.task.mix_tasks = {"word_problems"};
  o.task.mix_weights = {};
  o.checkpoint_dir = d.path + "/ckpt2";
  BOOST_CHECK_THROW(train_masked_lm(trained, o, "test"), Error);
}

BOOST_AUTO_TEST_SUITE_END()
