// Vision-language masked LMs: the visual tasks (an image of MNIST digits as visual tokens
// before the question), llada's vision_tokens, and visual_prune (FastV-style visual-token
// pruning). What they must show: a visual problem's image comes from its split's MNIST images
// and its answer from their labels, patches are the image's pixels in row-major order, the
// checker grades against the label; the model reads the image (another image changes the
// answer's logits) and refuses a run without one; pruning drops exactly the least-attended
// visual tokens at the chosen block and steps, keeps everything at keep 1, and costs fewer FLOPs.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/visual_prune.h"
#include "framework/config.h"
#include "framework/error.h"
#include "framework/idx_dataset.h"
#include "framework/lm_tasks.h"
#include "framework/registries.h"
#include "models/llada.h"
#include "models/mdlm_pipeline.h"
#include "tests/caches/mdlm_fixture.h"
#include "tests/models/small_llada.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::extra_id;
using cachelab::testing::run_seq;
using cachelab::testing::three_samples;

namespace {

LmTask visual(const std::string& name) {
  LmTaskOptions o;
  o.task = name;
  return LmTask(o);
}

// A small random VLM for three-digit images of 7 x 7 patches: 48 visual tokens, vocabulary 56
// (MASK 54, IMAGE 55).
LladaOptions small_vlm() {
  LladaOptions o = cachelab::testing::small_llada(5, 64);
  o.vocab_size = 56;
  o.mask_token_id = 54;
  o.vision_tokens = 48;
  o.vision_dim = 49;
  return o;
}

MdlmPipelineOptions read_digits() {
  MdlmPipelineOptions o;
  o.task.task = "read_digits";
  o.gen_length = 8;
  o.block_length = 8;
  o.steps_per_block = 4;
  return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(vlm)

BOOST_AUTO_TEST_CASE(visual_problems_show_their_splits_digits_and_are_graded_by_label) {
  const auto test_set = load_idx_dataset(default_data_dir(), "mnist", "test", 28);
  const auto train_set = load_idx_dataset(default_data_dir(), "mnist", "train", 28);
  const LmTask read = visual("read_digits"), sum = visual("sum_digits"), spell = visual("spell_digits");
  BOOST_CHECK_EQUAL(read.visual_tokens(), 48);
  BOOST_CHECK_EQUAL(read.visual_dim(), 49);
  BOOST_CHECK_EQUAL(read.prompt_length(), 48 + 5);
  BOOST_CHECK_EQUAL(spell.gen_length(), 24);
  const auto problems = read.problems(true, 0, 20);
  for (const auto& p : problems) {
    BOOST_REQUIRE_EQUAL(p.images.size(), 3u);
    BOOST_CHECK(p.test);
    int64_t label = 0;
    for (auto i : p.images) label = label * 10 + test_set.labels[i].item<int64_t>();
    BOOST_CHECK_EQUAL(p.label, label);
    char digits[8];
    std::snprintf(digits, sizeof digits, "%03lld", (long long)label);
    BOOST_CHECK_EQUAL(p.answer, digits);
    cachelab::testing::check_error([&] { read.check("read?", p.answer, p.label); }, {"cannot read"});  // no visual tokens
  }
  for (const auto& p : read.problems(false, 0, 5)) BOOST_CHECK(!p.test);
  // Patches: row-major over the 4 x 12 grid, each a 7 x 7 crop of the canvas.
  const auto images = read.encode_images(problems);
  BOOST_REQUIRE_EQUAL(images.sizes(), at::IntArrayRef({20, 48, 49}));
  BOOST_CHECK_LE(images.abs().max().item<float>(), 1.0f);
  const auto& p0 = problems[0];
  // Grid row 2, column 5: rows 14..20 of the canvas, columns 35..41 = digit 1's columns 7..13.
  const auto crop = test_set.images[p0.images[1]][0].narrow(0, 14, 7).narrow(1, 7, 7).reshape({49});
  BOOST_CHECK(at::equal(images[0][2 * 12 + 5], crop));
  BOOST_CHECK_EQUAL(read.encode_labels(problems)[0].item<int64_t>(), p0.label);
  // Training problems draw MNIST's training images.
  const auto tp = read.problems(false, 7, 1);
  BOOST_CHECK(at::equal(read.encode_images(tp)[0][0], train_set.images[tp[0].images[0]][0].narrow(0, 0, 7).narrow(1, 0, 7).reshape({49})));
  // Prompts: 48 IMAGE tokens, then the question; graded against the label.
  const auto prompts = read.encode_prompts(problems);
  BOOST_CHECK(prompts.narrow(1, 0, 48).eq(CharTokenizer::kImage).all().item<bool>());
  const std::string prompt = CharTokenizer::decode(std::vector<int64_t>(prompts[0].data_ptr<int64_t>(),
                                                                        prompts[0].data_ptr<int64_t>() + 53), false);
  BOOST_CHECK(read.recognises(prompt));
  BOOST_CHECK(!sum.recognises(prompt));
  BOOST_CHECK(read.check(prompt, p0.answer, p0.label));
  BOOST_CHECK(!read.check(prompt, p0.answer, (p0.label + 1) % 1000));
  cachelab::testing::check_error([&] { read.check(prompt, p0.answer); }, {"label"});
  BOOST_CHECK(spell.check(std::string(48, '_') + "spell?", "zero four two", 42));
  BOOST_CHECK(sum.check(std::string(48, '_') + "sum?", "6", 42));
  BOOST_CHECK(!sum.check(std::string(48, '_') + "sum?", "06", 42));
  // exact_match over token rows needs the labels.
  const auto rows = at::cat({prompts.narrow(0, 0, 2), read.encode_answers({problems[0], problems[1]})}, 1);
  BOOST_CHECK_EQUAL(exact_match_fraction(read, rows, read.encode_labels({problems[0], problems[1]})), 1.0);
  BOOST_CHECK_EQUAL(exact_match_fraction(read, rows, read.encode_labels({problems[1], problems[0]})),
                    problems[0].label == problems[1].label ? 1.0 : 0.0);
  cachelab::testing::check_error([&] { exact_match_fraction(read, rows); }, {"labels"});
}

BOOST_AUTO_TEST_CASE(the_model_reads_the_image_and_refuses_a_run_without_one) {
  Llada m(small_vlm());
  BOOST_CHECK_EQUAL(m.visual_tokens(), 48);
  const LmTask read = visual("read_digits");
  const auto problems = read.problems(true, 0, 2);
  const auto x = at::cat({read.encode_prompts(problems), at::full({2, 8}, 54, at::kLong)}, 1);
  Cond c;
  c.embeddings = read.encode_images(problems);
  PassThroughHooks hooks(m.linears());
  at::NoGradGuard g;
  const auto a = m.forward(x, at::zeros({2}), c, hooks);
  Cond swapped = c;
  swapped.embeddings = c.embeddings.flip(0);  // each sample sees the other's image
  const auto b = m.forward(x, at::zeros({2}), swapped, hooks);
  BOOST_CHECK(at::allclose(a.flip(0), b, 1e-5, 1e-5));  // the image is all that differs between the samples
  BOOST_CHECK_GT((a[0] - a[1]).abs().max().item<float>(), 1e-3f);
  cachelab::testing::check_error([&] { m.forward(x, at::zeros({2}), Cond{}, hooks); }, {"Cond::embeddings", "none"});
  // The mdlm pipeline refuses a visual task on a text model, and a text task on this one.
  MdlmPipeline pipe(read_digits());
  LladaOptions to = small_vlm();
  to.vision_tokens = 0;
  Llada text(to);
  cachelab::testing::check_error([&] { pipe.condition(text, 0, 1); }, {"visual tokens", "vision"});
  MdlmPipelineOptions sorting = read_digits();
  sorting.task.task = "sorting";
  cachelab::testing::check_error([&] { MdlmPipeline(sorting).condition(m, 0, 1); }, {"reads 48"});
  const Cond pc = pipe.condition(m, 0, 2);
  BOOST_CHECK(at::equal(pc.labels, read.encode_labels(problems)));
  BOOST_CHECK(at::equal(pc.embeddings, c.embeddings));
}

BOOST_AUTO_TEST_CASE(pruning_drops_the_least_attended_visual_tokens) {
  // Four visual positions, three text ones; the text queries attend to visual key 2, then 0.
  VisualPruneOptions o;
  o.keep = 0.5;
  o.layer = 1;
  VisualPrune prune(o);
  std::vector<LinearRef> none;
  prune.begin_run(none, nullptr);
  SeqForward f;
  f.batch = 1;
  f.length = 7;
  f.visual = 4;
  f.num_layers = 2;
  prune.seq_begin(f);
  const int64_t d = 2;
  auto q = at::zeros({1, 1, 7, d}), k = at::zeros({1, 1, 7, d}), v = at::randn({1, 1, 7, d});
  q.narrow(2, 4, 3).select(3, 0).fill_(1.0);  // text queries along axis 0
  k[0][0][2][0] = 8.0;                         // visual key 2 most attended
  k[0][0][0][0] = 4.0;                         // then visual key 0
  k[0][0][1][0] = -4.0;
  AttnCall call;
  call.layer = 0;
  call.q_positions = call.kv_positions = every_row(1, 7);
  const auto out = prune.attention(call, q, k, v);
  BOOST_CHECK(at::allclose(out, dense_attention(q, k, v, at::Tensor())));  // the attention itself is unchanged
  at::Tensor rows = every_row(1, 7), x = at::arange(7, at::kFloat).view({1, 7, 1});
  prune.seq_rows(0, rows, x);  // before block 0: nothing pruned
  BOOST_CHECK_EQUAL(rows.size(1), 7);
  prune.seq_rows(1, rows, x);
  BOOST_CHECK(at::equal(rows, at::tensor({0, 2, 4, 5, 6}, at::kLong).view({1, 5})));
  BOOST_CHECK(at::equal(x.view({5}), at::tensor({0.f, 2.f, 4.f, 5.f, 6.f})));
  BOOST_CHECK_EQUAL(prune.attended_keys(1, 7.0), 5.0);
  BOOST_CHECK_EQUAL(prune.attended_keys(0, 7.0), 7.0);
  // A text-only model: a clear error.
  f.visual = 0;
  cachelab::testing::check_error([&] { prune.seq_begin(f); }, {"visual_prune", "vision_tokens"});
}

BOOST_AUTO_TEST_CASE(pruning_at_chosen_steps_costs_fewer_flops_and_keep_1_changes_nothing) {
  Llada m(small_vlm());
  MdlmPipeline pipe(read_digits());
  RunOptions run = three_samples();
  ReferenceTrace ref;
  const auto base = run_seq(m, pipe, nullptr, run, nullptr, &ref);
  VisualPruneOptions all;
  all.keep = 1.0;
  VisualPrune keep_all(all);
  const auto same = run_seq(m, pipe, &keep_all, run, &ref, nullptr);
  BOOST_CHECK(at::equal(same.samples, base.samples));
  VisualPruneOptions late;
  late.keep = 0.25;
  late.from = 0.5;
  for (const char* score : {"attention", "random"}) {
    late.score = score;
    VisualPrune prune(late);
    const auto t = run_seq(m, pipe, &prune, run, &ref, nullptr);
    const int kept = extra_id(t, "visual_kept");
    BOOST_REQUIRE_GE(kept, 0);
    for (int i = 0; i < 4; ++i)  // 4 steps: the last two prune to 12 of 48 tokens (block 1 of 2)
      BOOST_CHECK_CLOSE(t.steps[size_t(i)].site_extra[size_t(kept)][0], i < 2 ? 1.0 : 0.25, 1e-9);
    for (int i = 0; i < 2; ++i) BOOST_CHECK_CLOSE(t.steps[size_t(i)].flops, base.steps[size_t(i)].flops, 1e-9);
    for (int i = 2; i < 4; ++i) BOOST_CHECK_LT(t.steps[size_t(i)].flops, 0.9 * base.steps[size_t(i)].flops);
  }
}

BOOST_AUTO_TEST_CASE(options_round_trip_and_bad_values_are_refused) {
  auto resolve = [](const std::string& yaml) { return ops_layers().resolve(parse_config_string(yaml, "exp.yaml")); };
  const std::string once = to_yaml(resolve("type: visual_prune\nkeep: 0.25\nlayer: 2\nfrom: 0.5\nscore: random\n"));
  BOOST_CHECK_EQUAL(to_yaml(resolve(once)), once);
  BOOST_CHECK_NE(once.find("keep: 0.25"), std::string::npos);
  cachelab::testing::check_error([&] { resolve("type: visual_prune\nkeep: 0\n"); }, {"keep"});
  cachelab::testing::check_error([&] { resolve("type: visual_prune\nlayer: 0\n"); }, {"layer", ">= 1"});
  cachelab::testing::check_error([&] { resolve("type: visual_prune\nfrom: 0.6\nuntil: 0.5\n"); }, {"from"});
  cachelab::testing::check_error([&] { resolve("type: visual_prune\nscore: norm\n"); }, {"score"});
}

BOOST_AUTO_TEST_SUITE_END()
