#include "framework/lm_tasks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>
#include <numeric>

#include "framework/error.h"
#include "framework/idx_dataset.h"

namespace cachelab {
namespace {

// After PAD and EOS, in id order.
const std::string kChars = "\n 0123456789abcdefghijklmnopqrstuvwxyz+-*/=,.?#:$'()";
const char* const kDigitWords[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};

bool visual_task(const std::string& name) {
  return name == "read_digits" || name == "sum_digits" || name == "spell_digits";
}
std::string visual_question(const std::string& name) {
  return name == "read_digits" ? "read?" : name == "sum_digits" ? "sum?" : "spell?";
}

// MNIST (28 x 28, no padding), loaded once per split and kept.
const ImageDataset& mnist(bool test) {
  static std::mutex mu;
  static std::map<bool, ImageDataset> loaded;
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(test);
  if (it == loaded.end()) it = loaded.emplace(test, load_idx_dataset(default_data_dir(), "mnist", test ? "test" : "train", 28)).first;
  return it->second;
}

// The answer a visual task's question asks of the digits `label` shows (n digits, leading zeros kept).
std::string visual_answer(const std::string& name, int64_t label, int n) {
  std::string digits = std::to_string(label);
  digits.insert(0, size_t(std::max<int>(0, n - int(digits.size()))), '0');
  if (name == "read_digits") return digits;
  if (name == "sum_digits") {
    int sum = 0;
    for (char c : digits) sum += c - '0';
    return std::to_string(sum);
  }
  std::string words;
  for (char c : digits) words += (words.empty() ? "" : " ") + std::string(kDigitWords[c - '0']);
  return words;
}

// Word problems: fixed lengths (the longest prompt is 94 characters, the longest answer 34).
constexpr int64_t kWordPromptLength = 96, kWordGenLength = 40;
constexpr int kWordMax = 99;  // every value of a word problem stays in [0, 99]
const char* const kNames[] = {"ann", "bob", "cal", "dee", "eva", "fay", "gus", "hal", "ivy", "jon"};
const bool kShe[] = {true, false, false, true, true, true, false, false, true, false};
const char* const kObjects[] = {"pens", "eggs", "cards", "books", "coins", "cups", "hats", "keys"};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// splitmix64: the generator (explicit arithmetic, the same on every platform).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  int64_t uniform(int64_t lo, int64_t hi) { return lo + int64_t(next() % uint64_t(hi - lo + 1)); }  // [lo, hi]
};

int64_t pow10(int d) {
  int64_t p = 1;
  for (int i = 0; i < d; ++i) p *= 10;
  return p;
}
int64_t round_up8(int64_t n) { return (n + 7) / 8 * 8; }

std::string letters(Rng& r, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += char('a' + r.uniform(0, 25));
  return s;
}

// A non-negative decimal without sign or leading zeros ("0" is fine); -1 otherwise.
int64_t parse_number(const std::string& s) {
  if (s.empty() || s.size() > 18 || (s.size() > 1 && s[0] == '0')) return -1;
  int64_t v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

// The split-by-character parts of "a<op>b=".
bool parse_binary(const std::string& prompt, char op, int64_t& a, int64_t& b) {
  const auto p = prompt.find(op);
  if (p == std::string::npos || prompt.empty() || prompt.back() != '=') return false;
  a = parse_number(prompt.substr(0, p));
  b = parse_number(prompt.substr(p + 1, prompt.size() - p - 2));
  return a >= 0 && b >= 0;
}

// The value a word problem asks for (-1 if the prompt is not one of ours).
int64_t word_problem_value(const std::string& prompt) {
  std::vector<std::string> sentences;
  size_t start = 0;
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] == '.' || prompt[i] == '?') {
      sentences.push_back(prompt.substr(start, i - start));
      start = i + 1;
    }
  if (sentences.size() < 2) return -1;
  auto number_in = [](const std::string& s) -> int64_t {
    const auto b = s.find_first_of("0123456789");
    if (b == std::string::npos) return -1;
    const auto e = s.find_first_not_of("0123456789", b);
    return parse_number(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
  };
  int64_t x = number_in(sentences[0]);
  if (x < 0 || sentences[0].find(" has ") == std::string::npos) return -1;
  for (size_t i = 1; i + 1 < sentences.size(); ++i) {
    const std::string& s = sentences[i];
    if (s.find(" buys ") != std::string::npos) x += number_in(s);
    else if (s.find(" gives ") != std::string::npos) x -= number_in(s);
    else if (s.find(" doubles ") != std::string::npos) x *= 2;
    else if (s.find(" triples ") != std::string::npos) x *= 3;
    else return -1;
  }
  return sentences.back().find("how many") == std::string::npos ? -1 : x;
}

}  // namespace

// ---- tokenizer

int64_t CharTokenizer::vocab_size() { return 2 + int64_t(kChars.size()); }

std::vector<int64_t> CharTokenizer::encode(const std::string& text) {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  for (char c : text) {
    const auto p = kChars.find(c);
    CL_CHECK(p != std::string::npos, "character tokenizer: `" << c << "` (code " << int(static_cast<unsigned char>(c))
                                                              << ") is not in the vocabulary, in \"" << text << "\"");
    ids.push_back(2 + int64_t(p));
  }
  return ids;
}

std::string CharTokenizer::decode(const std::vector<int64_t>& ids, bool stop_at_eos) {
  std::string s;
  for (int64_t id : ids) {
    if (id == kPad) continue;
    if (id == kEos) {
      if (stop_at_eos) break;
      continue;
    }
    s += (id >= 2 && id < vocab_size()) ? kChars[size_t(id - 2)] : '_';
  }
  return s;
}

// ---- tasks

const std::vector<std::string>& lm_task_names() {
  static const std::vector<std::string> names = {"addition",      "multiplication", "sorting",   "reversal",
                                                 "word_problems", "read_digits",    "sum_digits", "spell_digits"};
  return names;
}

LmTask::LmTask(const LmTaskOptions& o, const std::string& name) : name_(name.empty() ? o.task : name), o_(o) {
  if (name_ == "addition") {
    CL_CHECK(o.digits >= 1 && o.digits <= 9, "task addition: digits must be in [1, 9], got " << o.digits);
    prompt_length_ = 2 * o.digits + 2;
    gen_length_ = round_up8(o.digits + 2);
  } else if (name_ == "multiplication") {
    CL_CHECK(o.mul_digits >= 1 && o.mul_digits <= 4, "task multiplication: mul_digits must be in [1, 4], got " << o.mul_digits);
    prompt_length_ = 2 * o.mul_digits + 2;
    gen_length_ = round_up8(2 * o.mul_digits + 1);
  } else if (name_ == "sorting" || name_ == "reversal") {
    CL_CHECK(o.length >= 1 && o.length <= 32, "task " << name_ << ": length must be in [1, 32], got " << o.length);
    prompt_length_ = (name_ == "sorting" ? 6 : 5) + o.length;
    gen_length_ = round_up8(o.length + 1);
  } else if (name_ == "word_problems") {
    prompt_length_ = kWordPromptLength;
    gen_length_ = kWordGenLength;
  } else if (visual_task(name_)) {
    CL_CHECK(o.image_digits >= 1 && o.image_digits <= 6, "task " << name_ << ": image_digits must be in [1, 6], got "
                                                                  << o.image_digits);
    CL_CHECK(o.patch >= 1 && 28 % o.patch == 0, "task " << name_ << ": patch must divide 28, got " << o.patch);
    visual_tokens_ = int64_t(28 / o.patch) * (28 * o.image_digits / o.patch);
    prompt_length_ = visual_tokens_ + int64_t(visual_question(name_).size());
    gen_length_ = round_up8((name_ == "spell_digits" ? 6 * o.image_digits : o.image_digits + 1) + 1);
  } else {
    std::string valid;
    for (const auto& n : lm_task_names()) valid += (valid.empty() ? "" : ", ") + n;
    CL_FAIL("unknown task `" << name_ << "`" << (name_ == "mix" ? " here (a mix is for training; evaluate one task at a time)" : "")
                             << "; valid: " << valid);
  }
}

bool LmTask::in_test_split(const std::string& key) { return fnv1a(key) % 10 == 0; }

LmProblem LmTask::draw(uint64_t seed) const {
  Rng r{seed};
  LmProblem p;
  if (name_ == "addition" || name_ == "multiplication") {
    const bool add = name_ == "addition";
    const int64_t hi = pow10(add ? o_.digits : o_.mul_digits) - 1;
    const int64_t a = r.uniform(0, hi), b = r.uniform(0, hi);
    p.prompt = std::to_string(a) + (add ? "+" : "*") + std::to_string(b) + "=";
    p.answer = std::to_string(add ? a + b : a * b);
    p.key = p.prompt;
  } else if (name_ == "sorting" || name_ == "reversal") {
    const std::string s = letters(r, o_.length);
    p.answer = s;
    if (name_ == "sorting") std::sort(p.answer.begin(), p.answer.end());
    else std::reverse(p.answer.begin(), p.answer.end());
    p.prompt = (name_ == "sorting" ? "sort:" : "rev:") + s + "=";
    p.key = p.prompt;
  } else if (visual_task(name_)) {  // the caller picks the split's images (problem())
    p.prompt = visual_question(name_);
  } else {  // word_problems
    const int who = int(r.uniform(0, 9)), what = int(r.uniform(0, 7));
    const std::string pron = kShe[who] ? "she" : "he", obj = kObjects[what];
    int64_t x = r.uniform(2, 40);
    p.prompt = std::string(kNames[who]) + " has " + std::to_string(x) + " " + obj + ".";
    const int ops = int(r.uniform(2, 3));
    std::string lines;
    for (int i = 0; i < ops; ++i) {
      for (;;) {
        const int op = int(r.uniform(0, 3));  // buys, gives away, doubles, triples
        int64_t y = x;
        std::string sentence, line;
        if (op == 0 && x <= kWordMax - 1) {
          const int64_t b = r.uniform(1, std::min<int64_t>(30, kWordMax - x));
          y = x + b;
          sentence = pron + " buys " + std::to_string(b) + " more.";
          line = std::to_string(x) + "+" + std::to_string(b) + "=" + std::to_string(y);
        } else if (op == 1 && x >= 1) {
          const int64_t b = r.uniform(1, std::min<int64_t>(x, 40));
          y = x - b;
          sentence = pron + " gives " + std::to_string(b) + " away.";
          line = std::to_string(x) + "-" + std::to_string(b) + "=" + std::to_string(y);
        } else if ((op == 2 || op == 3) && x >= 1 && x * (op == 2 ? 2 : 3) <= kWordMax) {
          const int k = op == 2 ? 2 : 3;
          y = x * k;
          sentence = pron + (k == 2 ? " doubles them." : " triples them.");
          line = std::to_string(x) + "*" + std::to_string(k) + "=" + std::to_string(y);
        } else {
          continue;  // not possible from x: draw another operation
        }
        p.prompt += " " + sentence;
        lines += line + "\n";
        x = y;
        break;
      }
    }
    p.prompt += " how many " + obj + " now?";
    p.answer = lines + "#### " + std::to_string(x);
    p.key = lines;
  }
  CL_CHECK(int64_t(p.prompt.size()) <= prompt_length_ && int64_t(p.answer.size()) < gen_length_,
           "task " << name_ << ": problem longer than its fixed lengths (internal error): " << p.prompt);
  return p;
}

LmProblem LmTask::problem(bool test, uint64_t index) const {
  Rng seeder{fnv1a(name_) ^ (uint64_t(o_.task_seed) * 0x9e3779b97f4a7c15ull) ^ (test ? 0x5bd1e995ull : 0ull)};
  seeder.s += index * 0xd1342543de82ef95ull;
  Rng r{seeder.next()};
  if (visual_tokens_ > 0) {  // MNIST's split: the images of the split, drawn uniformly
    LmProblem p = draw(r.next());
    const int64_t N = mnist(test).labels.size(0);
    const auto* labels = mnist(test).labels.data_ptr<int64_t>();
    p.label = 0;
    for (int d = 0; d < o_.image_digits; ++d) {
      p.images.push_back(r.uniform(0, N - 1));
      p.label = p.label * 10 + labels[p.images.back()];
    }
    p.answer = visual_answer(name_, p.label, o_.image_digits);
    p.test = test;
    return p;
  }
  for (int tries = 0; tries < 100000; ++tries) {
    LmProblem p = draw(r.next());
    if (in_test_split(p.key) == test) return p;
  }
  CL_FAIL("task " << name_ << ": found no " << (test ? "test" : "training") << " problem in 100000 draws");
}

std::vector<LmProblem> LmTask::problems(bool test, uint64_t start, int64_t n) const {
  std::vector<LmProblem> out;
  out.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(problem(test, start + uint64_t(i)));
  return out;
}

bool LmTask::check(const std::string& prompt, const std::string& answer, int64_t label) const {
  if (visual_tokens_ > 0) {
    CL_CHECK(recognises(prompt), "task " << name_ << ": cannot read the prompt \"" << prompt << "\"");
    CL_CHECK(label >= 0, "task " << name_ << ": grading needs the image's label (the samples' labels)");
    return answer == visual_answer(name_, label, o_.image_digits);
  }
  if (name_ == "addition" || name_ == "multiplication") {
    const bool add = name_ == "addition";
    int64_t a = 0, b = 0;
    CL_CHECK(parse_binary(prompt, add ? '+' : '*', a, b), "task " << name_ << ": cannot read the prompt \"" << prompt << "\"");
    return answer == std::to_string(add ? a + b : a * b);
  }
  if (name_ == "sorting" || name_ == "reversal") {
    const std::string head = name_ == "sorting" ? "sort:" : "rev:";
    CL_CHECK(prompt.size() > head.size() && prompt.compare(0, head.size(), head) == 0 && prompt.back() == '=',
             "task " << name_ << ": cannot read the prompt \"" << prompt << "\"");
    std::string s = prompt.substr(head.size(), prompt.size() - head.size() - 1);
    if (name_ == "sorting") std::sort(s.begin(), s.end());
    else std::reverse(s.begin(), s.end());
    return answer == s;
  }
  const int64_t v = word_problem_value(prompt);
  CL_CHECK(v >= 0, "task word_problems: cannot read the prompt \"" << prompt << "\"");
  const auto nl = answer.rfind('\n');
  const std::string last = nl == std::string::npos ? answer : answer.substr(nl + 1);
  return last.compare(0, 5, "#### ") == 0 && parse_number(last.substr(5)) == v;
}

bool LmTask::recognises(const std::string& prompt) const {
  if (visual_tokens_ > 0)  // the visual tokens decode to '_'
    return int64_t(prompt.size()) == prompt_length_ &&
           prompt.find_first_not_of('_') == size_t(visual_tokens_) && prompt.substr(size_t(visual_tokens_)) == visual_question(name_);
  if (name_ == "addition" || name_ == "multiplication") {
    int64_t a = 0, b = 0;
    return int64_t(prompt.size()) <= prompt_length_ && parse_binary(prompt, name_ == "addition" ? '+' : '*', a, b);
  }
  if (name_ == "sorting" || name_ == "reversal") {
    const std::string head = name_ == "sorting" ? "sort:" : "rev:";
    if (int64_t(prompt.size()) != prompt_length_ || prompt.compare(0, head.size(), head) != 0 || prompt.back() != '=')
      return false;
    for (size_t i = head.size(); i + 1 < prompt.size(); ++i)
      if (prompt[i] < 'a' || prompt[i] > 'z') return false;
    return true;
  }
  return int64_t(prompt.size()) <= prompt_length_ && word_problem_value(prompt) >= 0;
}

at::Tensor LmTask::encode_prompts(const std::vector<LmProblem>& problems) const {
  auto out = at::full({int64_t(problems.size()), prompt_length_}, CharTokenizer::kPad, at::kLong);
  auto a = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < problems.size(); ++i) {
    const auto ids = CharTokenizer::encode(problems[i].prompt);
    CL_CHECK(int64_t(ids.size()) <= prompt_length_, "task " << name_ << ": prompt longer than " << prompt_length_);
    const int64_t off = prompt_length_ - int64_t(ids.size());
    for (size_t j = 0; j < ids.size(); ++j) a[int64_t(i)][off + int64_t(j)] = ids[j];
    for (int64_t j = 0; j < visual_tokens_; ++j) a[int64_t(i)][j] = CharTokenizer::kImage;
  }
  return out;
}

at::Tensor LmTask::encode_images(const std::vector<LmProblem>& problems) const {
  if (visual_tokens_ == 0) return at::Tensor();
  const int64_t n = int64_t(problems.size()), D = o_.image_digits, p = o_.patch;
  // Images [n, 28, 28 D]: the digits side by side, from the split each problem was drawn from.
  auto canvas = at::empty({n, 28, 28 * D}, at::kFloat);
  for (int64_t i = 0; i < n; ++i) {
    const auto& pr = problems[size_t(i)];
    CL_CHECK(int64_t(pr.images.size()) == D, "task " << name_ << ": problem without its " << D << " images (internal error)");
    for (int64_t d = 0; d < D; ++d) canvas[i].narrow(1, 28 * d, 28).copy_(mnist(pr.test).images[pr.images[size_t(d)]][0]);
  }
  // Patches, row-major: [n, 28/p, p, 28D/p, p] -> [n, (28/p)(28D/p), p p].
  return canvas.view({n, 28 / p, p, 28 * D / p, p}).permute({0, 1, 3, 2, 4}).reshape({n, visual_tokens_, p * p}).contiguous();
}

at::Tensor LmTask::encode_labels(const std::vector<LmProblem>& problems) const {
  if (visual_tokens_ == 0) return at::Tensor();
  auto out = at::empty({int64_t(problems.size())}, at::kLong);
  for (size_t i = 0; i < problems.size(); ++i) out[int64_t(i)] = problems[i].label;
  return out;
}

at::Tensor LmTask::encode_answers(const std::vector<LmProblem>& problems) const {
  auto out = at::full({int64_t(problems.size()), gen_length_}, CharTokenizer::kEos, at::kLong);
  auto a = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < problems.size(); ++i) {
    const auto ids = CharTokenizer::encode(problems[i].answer);
    CL_CHECK(int64_t(ids.size()) < gen_length_, "task " << name_ << ": answer longer than " << gen_length_ - 1);
    for (size_t j = 0; j < ids.size(); ++j) a[int64_t(i)][int64_t(j)] = ids[j];
  }
  return out;
}

void check_visual_inputs(const LmTask& task, int64_t visual_tokens, int64_t visual_dim, int64_t vocab, int64_t mask,
                         const std::string& who) {
  CL_CHECK(visual_tokens == task.visual_tokens() && visual_dim == task.visual_dim(),
           who << ": task " << task.name() << (task.visual_tokens() ? " shows an image as " : " has ") << task.visual_tokens()
               << " visual tokens of width " << task.visual_dim() << ", the model reads " << visual_tokens << " of width "
               << visual_dim
               << " (visual tasks go with a vision-language model, llada's vision_tokens and vision_dim; image_digits "
                  "and patch decide their count)");
  CL_CHECK(task.visual_tokens() == 0 || (vocab > CharTokenizer::kImage && mask != CharTokenizer::kImage),
           who << ": task " << task.name() << " marks visual tokens with id " << CharTokenizer::kImage
               << ": the model's vocabulary (" << vocab << ") must hold it and MASK (" << mask << ") be another id");
}

LmTaskSet::LmTaskSet(const LmTaskOptions& o) {
  CL_CHECK(!o.task.empty(), "no task given (task: addition | multiplication | sorting | reversal | word_problems | mix)");
  if (o.task != "mix") {
    tasks.emplace_back(o);
    weights = {1.0};
    return;
  }
  CL_CHECK(!o.mix_tasks.empty(), "task mix: mix_tasks is empty");
  CL_CHECK(o.mix_weights.empty() || o.mix_weights.size() == o.mix_tasks.size(),
           "task mix: mix_weights has " << o.mix_weights.size() << " entries for " << o.mix_tasks.size() << " mix_tasks");
  double sum = 0;
  for (size_t i = 0; i < o.mix_tasks.size(); ++i) {
    CL_CHECK(o.mix_tasks[i] != "mix", "task mix: a mix cannot contain `mix`");
    tasks.emplace_back(o, o.mix_tasks[i]);
    const double w = o.mix_weights.empty() ? 1.0 : o.mix_weights[i];
    CL_CHECK(w > 0, "task mix: mix_weights must be > 0, got " << w);
    weights.push_back(w);
    sum += w;
  }
  for (double& w : weights) w /= sum;
}

double exact_match_fraction(const LmTask& task, const at::Tensor& tokens, const at::Tensor& labels) {
  const int64_t P = task.prompt_length();
  CL_CHECK(tokens.defined() && tokens.dim() == 2 && tokens.size(1) > P && !tokens.is_floating_point(),
           "exact_match: expects token ids [N, prompt + generation] with the task's prompt of " << P << " tokens, got "
                                                                                           << (tokens.defined() ? tokens.sizes() : at::IntArrayRef{}));
  auto t = tokens.to(at::kCPU, at::kLong).contiguous();
  const int64_t N = t.size(0), L = t.size(1);
  if (N == 0) return 0.0;
  auto a = t.accessor<int64_t, 2>();
  CL_CHECK(task.visual_tokens() == 0 || (labels.defined() && labels.numel() == N),
           "exact_match: task " << task.name() << " grades against the images' labels: the run has "
                                << (labels.defined() ? labels.numel() : 0) << " labels for " << N << " samples");
  const at::Tensor lab = labels.defined() ? labels.to(at::kCPU, at::kLong).contiguous() : labels;
  int64_t right = 0;
  for (int64_t i = 0; i < N; ++i) {
    std::vector<int64_t> prompt, gen;
    for (int64_t j = 0; j < P; ++j) prompt.push_back(a[i][j]);
    for (int64_t j = P; j < L; ++j) gen.push_back(a[i][j]);
    right += task.check(CharTokenizer::decode(prompt, false), CharTokenizer::decode(gen, true),
                        lab.defined() ? lab.data_ptr<int64_t>()[i] : -1)
                 ? 1
                 : 0;
  }
  return double(right) / double(N);
}

}  // namespace cachelab

namespace cachelab {

int recognise_task(const std::vector<LmTask>& tasks, const at::Tensor& row) {
  auto r = row.to(at::kCPU, at::kLong).contiguous();
  const int64_t* p = r.data_ptr<int64_t>();
  for (size_t k = 0; k < tasks.size(); ++k) {
    const int64_t P = tasks[k].prompt_length();
    if (r.numel() <= P) continue;
    const std::string prompt = CharTokenizer::decode(std::vector<int64_t>(p, p + P), false);
    if (tasks[k].recognises(prompt)) return int(k);
  }
  return -1;
}

}  // namespace cachelab
