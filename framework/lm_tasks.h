// Exactly-checkable text tasks for masked-diffusion LMs: a character-level tokenizer, seeded
// generators with a held-out test split, and checkers.
//
// Tasks (each prompt ends with `=` or `?`, the answer follows it):
//   addition        "123+45="                        -> "168"            (operands of 0 .. digits digits)
//   multiplication  "12*34="                         -> "408"            (operands of 0 .. mul_digits digits)
//   sorting         "sort:qbxaqe="                   -> "abeqqx"         (`length` random letters)
//   reversal        "rev:qbxaqe="                    -> "eqaxbq"
//   word_problems   "ann has 12 pens. she buys 5 more. she gives 3 away. how many pens now?"
//                   -> "12+5=17\n17-3=14\n#### 14"  (GSM8K-shaped: one line per operation, then
//                   the final `#### N` line; 2 or 3 operations, every value in 0 .. 99)
//   mix             a weighted mixture of mix_tasks (training only: each task keeps its own lengths)
//
// Visual tasks (for a vision-language masked LM: llada's vision_tokens): an image of
// image_digits MNIST digits side by side (28 x 28 image_digits pixels) comes as visual tokens
// before the question, one per `patch` x `patch` patch (row-major; Cond::embeddings, the raw
// patch pixels in [-1, 1]; the token ids there are CharTokenizer::kImage):
//   read_digits     "read?"   -> "471"              (the digits, left to right)
//   sum_digits      "sum?"    -> "12"
//   spell_digits    "spell?"  -> "four seven one"  (the long-answer task)
// Their split is MNIST's: training problems draw MNIST's training images, test problems its
// test images, so no test image is ever trained on. A problem's label is the number the image
// shows (471); the checker grades an answer against the question and the label.
//
// Split: a problem is in the test split when the FNV-1a hash of its key (the prompt for the
// arithmetic, sorting and reversal tasks; the operation lines for word problems, so that a test
// problem's arithmetic is never seen with other names) is 0 mod 10. Training draws reject test
// problems, so the splits never overlap. Problem i of a split is drawn by a generator seeded
// with (task_seed, task, split, i): reproducible everywhere (no std distributions).
//
// Token layout: a task's prompts have a fixed length prompt_length() (left-padded with PAD);
// answers are padded with EOS to gen_length() (a multiple of 8, at least one EOS), as
// LLaDA's SFT pads responses, so batches are rectangular.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cachelab {

// Character-level vocabulary: PAD = 0, EOS = 1, then "\n", " ", digits, lowercase letters and
// the punctuation "+-*/=,.?#:$'()". vocab_size() = 54; a masked LM over it needs its MASK
// id outside [0, 54) (tiny_mdlm: MASK = vocab_size of the model). kImage = 55 marks visual
// tokens (a vision-language model's vocabulary holds it; llada's MASK is then 54).
class CharTokenizer {
 public:
  static constexpr int64_t kPad = 0, kEos = 1, kImage = 55;
  static int64_t vocab_size();
  // Throws (naming the character and the text) on a character outside the vocabulary.
  static std::vector<int64_t> encode(const std::string& text);
  // PAD is skipped; decoding stops at the first EOS when stop_at_eos; ids outside the
  // vocabulary (MASK) decode to '_'.
  static std::string decode(const std::vector<int64_t>& ids, bool stop_at_eos = true);
};

// The tasks by name: the five text tasks, then the three visual ones.
const std::vector<std::string>& lm_task_names();

struct LmTaskOptions {
  std::string task;  // addition | ... | word_problems | read_digits | sum_digits | spell_digits | mix; "" = none
  int digits = 3;           // addition: operands have up to this many digits
  int mul_digits = 2;       // multiplication: operands have up to this many digits
  int length = 6;           // sorting, reversal: letters in the list
  std::vector<std::string> mix_tasks = {"addition", "multiplication", "sorting", "reversal", "word_problems"};
  std::vector<double> mix_weights;  // one per mix_tasks entry; empty = equal weights
  int64_t task_seed = 0;    // seed of the problem generator (the split does not depend on it)
  int image_digits = 3;     // visual tasks: MNIST digits in the image
  int patch = 7;            // visual tasks: pixels per side of a visual token's patch (divides 28)

  template <class V>
  void fields(V& v) {
    v("task", task, "exactly-checked task: addition | multiplication | sorting | reversal | word_problems | "
                    "read_digits | sum_digits | spell_digits (visual: an image of MNIST digits) | mix");
    v("digits", digits, "addition: operands of up to this many digits");
    v("mul_digits", mul_digits, "multiplication: operands of up to this many digits");
    v("length", length, "sorting, reversal: number of letters");
    v("mix_tasks", mix_tasks, "mix: the tasks mixed");
    v("mix_weights", mix_weights, "mix: a weight per mix_tasks entry (empty = equal)");
    v("task_seed", task_seed, "seed of the problem generator (the train/test split does not depend on it)");
    v("image_digits", image_digits, "visual tasks: MNIST digits side by side in the image", 3);
    v("patch", patch, "visual tasks: a visual token per patch x patch pixels (divides 28)", 7);
  }
  template <class C>
  void check(C& c) const {
    std::vector<std::string> valid = lm_task_names();
    valid.insert(valid.begin(), "");
    valid.push_back("mix");
    c.one_of("task", task, valid);
    c.require(digits >= 1 && digits <= 9, "digits", "must be in [1, 9]");
    c.require(mul_digits >= 1 && mul_digits <= 4, "mul_digits", "must be in [1, 4]");
    c.require(length >= 1 && length <= 32, "length", "must be in [1, 32]");
    c.each_one_of("mix_tasks", mix_tasks, lm_task_names());
    c.require(image_digits >= 1 && image_digits <= 6, "image_digits", "must be in [1, 6]");
    c.require(patch >= 1 && 28 % patch == 0, "patch", "must divide 28 (1, 2, 4, 7, 14, 28)");
    c.require(task != "mix" || !mix_tasks.empty(), "mix_tasks", "must not be empty for task mix");
    c.require(mix_weights.empty() || mix_weights.size() == mix_tasks.size(), "mix_weights",
              "must have one weight per mix_tasks entry (or be empty)");
    bool positive = true;
    for (double w : mix_weights) positive = positive && w > 0;
    c.require(positive, "mix_weights", "must be > 0");
  }
};

struct LmProblem {
  std::string prompt, answer, key;  // key: what the split hashes (empty for visual tasks: MNIST splits them)
  int64_t label = -1;               // visual tasks: the number the image shows
  std::vector<int64_t> images;      // visual tasks: the MNIST indices of its digits, left to right
  bool test = false;                // visual tasks: drawn from the test split (MNIST's test images)
};

// One task (not a mix).
class LmTask {
 public:
  // `name` overrides o.task (a mix builds its members this way).
  explicit LmTask(const LmTaskOptions& o, const std::string& name = "");
  const std::string& name() const { return name_; }
  int64_t prompt_length() const { return prompt_length_; }
  int64_t gen_length() const { return gen_length_; }
  // Visual tasks: the visual tokens at the prompt's start and the width of each (patch^2);
  // 0 for text tasks.
  int64_t visual_tokens() const { return visual_tokens_; }
  int64_t visual_dim() const { return visual_tokens_ > 0 ? int64_t(o_.patch) * o_.patch : 0; }
  static bool in_test_split(const std::string& key);
  // Problem `index` of the test split (test) or the training split, deterministic.
  LmProblem problem(bool test, uint64_t index) const;
  // Exact check of a decoded answer (EOS and after removed) against what the prompt asks:
  // recomputed from the prompt text (and, for visual tasks, the image's label). word_problems:
  // the last line must be `#### N` with N right (the operation lines are not graded, as GSM8K
  // grades the final answer).
  bool check(const std::string& prompt, const std::string& answer, int64_t label = -1) const;
  // Whether `prompt` is one of this task's prompts (its format and lengths; never throws).
  bool recognises(const std::string& prompt) const;
  // Tokens: prompts [n, prompt_length] left-padded with PAD, answers [n, gen_length] padded
  // with EOS (int64, CPU).
  at::Tensor encode_prompts(const std::vector<LmProblem>& problems) const;
  at::Tensor encode_answers(const std::vector<LmProblem>& problems) const;
  // Visual tasks: the images' patches [n, visual_tokens, patch^2] float32 in [-1, 1]
  // (Cond::embeddings) and labels [n] int64 (Cond::labels); undefined for text tasks.
  at::Tensor encode_images(const std::vector<LmProblem>& problems) const;
  at::Tensor encode_labels(const std::vector<LmProblem>& problems) const;
  // Problems [start, start + n) of a split.
  std::vector<LmProblem> problems(bool test, uint64_t start, int64_t n) const;

 private:
  LmProblem draw(uint64_t seed) const;  // any split
  std::string name_;
  LmTaskOptions o_;
  int64_t prompt_length_ = 0, gen_length_ = 0, visual_tokens_ = 0;
};

// The tasks of `o` with their weights (one task with weight 1 unless o.task is mix).
struct LmTaskSet {
  explicit LmTaskSet(const LmTaskOptions& o);
  std::vector<LmTask> tasks;
  std::vector<double> weights;  // normalised to sum 1
};

// Fraction of rows of `tokens` [N, >= P + 1] (prompt of the task's length, then the
// generation) whose generation decodes (up to EOS) to an answer the task's checker accepts;
// visual tasks need the rows' labels [N].
double exact_match_fraction(const LmTask& task, const at::Tensor& tokens, const at::Tensor& labels = at::Tensor());

// Throws, naming `who`, unless a masked LM that reads `visual_tokens` visual inputs of width
// `visual_dim` (0 = a text-only model) with a vocabulary of `vocab` ids and MASK `mask` can take
// `task`'s sequences: a visual task needs its count and width and the IMAGE id in the
// vocabulary (not MASK); a text task needs a text-only model.
void check_visual_inputs(const LmTask& task, int64_t visual_tokens, int64_t visual_dim, int64_t vocab, int64_t mask,
                         const std::string& who);

// Row i's task among `tasks`: the first whose prompt_length() tokens decode to a prompt it
// recognises; -1 when none does.
int recognise_task(const std::vector<LmTask>& tasks, const at::Tensor& row);

}  // namespace cachelab
