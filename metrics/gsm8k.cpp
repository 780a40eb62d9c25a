#include "metrics/gsm8k.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <regex>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/bpe_tokenizer.h"
#include "framework/text_prompts.h"

namespace cachelab {

namespace {

// "-0012.500" -> "12.5" style normalisation of a matched number (commas already removed).
std::string normalise_number(std::string s) {
  bool negative = false;
  if (!s.empty() && s[0] == '-') {
    negative = true;
    s.erase(0, 1);
  }
  std::string whole = s, frac;
  if (auto dot = s.find('.'); dot != std::string::npos) {
    whole = s.substr(0, dot);
    frac = s.substr(dot + 1);
  }
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  const auto nz = whole.find_first_not_of('0');
  whole = nz == std::string::npos ? "0" : whole.substr(nz);
  std::string out = whole + (frac.empty() ? "" : "." + frac);
  if (negative && out != "0") out = "-" + out;
  return out;
}

const std::regex& number_pattern() {
  static const std::regex re("-?[0-9][0-9,]*(\\.[0-9]+)?");
  return re;
}

std::string clean(const std::string& m) {
  std::string s;
  for (char c : m)
    if (c != ',') s += c;
  return normalise_number(s);
}

}  // namespace

std::string gsm8k_extract_answer(const std::string& text) {
  const auto& re = number_pattern();
  if (auto hashes = text.rfind("####"); hashes != std::string::npos) {
    std::smatch m;
    const std::string after = text.substr(hashes + 4);
    if (std::regex_search(after, m, re)) return clean(m.str());
  }
  std::string last;
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) last = it->str();
  return last.empty() ? "" : clean(last);
}

Gsm8kMetric::Gsm8kMetric(const Gsm8kOptions& o) : o_(o) {
  CL_CHECK(!o.prompts.empty(), "metric gsm8k: set `prompts:` to the mdlm_text pipeline's JSONL file");
  CL_CHECK(!o.tokenizer.empty(), "metric gsm8k: set `tokenizer:` to the mdlm_text pipeline's tokenizer.json");
  prompts_path_ = resolve_path(o.prompts);
  tok_ = std::make_unique<BpeTokenizer>(resolve_path(o.tokenizer));
  pad_ = text_pad_id(*tok_);
  for (const char* t : {"<|eot_id|>", "<|endoftext|>"})
    if (tok_->has_token(t)) stops_.push_back(tok_->token_id(t));
  for (auto& p : read_text_problems(prompts_path_)) {
    answers_.push_back(p.answer.empty() ? "" : gsm8k_extract_answer(p.answer));
    lines_.push_back(p.line);
    chat_.push_back(encode_text_prompt(*tok_, p.question, true));
    raw_.push_back(encode_text_prompt(*tok_, p.question, false));
  }
}

Gsm8kMetric::~Gsm8kMetric() = default;

bool Gsm8kMetric::known(int64_t id) const {
  auto it = known_.find(id);
  if (it != known_.end()) return it->second;
  bool ok = true;
  try {
    tok_->decode({id});
  } catch (const std::exception&) {
    ok = false;
  }
  known_.emplace(id, ok);
  return ok;
}

std::string Gsm8kMetric::generation(const at::Tensor& row, int64_t i) const {
  CL_CHECK(i >= 0 && i < int64_t(chat_.size()), "metric gsm8k: sample " << i << " has no line in `" << o_.prompts << "` ("
                                                                        << chat_.size() << " questions): the run decoded more "
                                                                        << "samples than the metric's prompts file holds");
  auto r = row.to(at::kLong).contiguous().cpu();
  const int64_t* p = r.data_ptr<int64_t>();
  const int64_t L = r.numel();
  int64_t k = 0;
  while (k < L && p[k] == pad_) ++k;
  auto starts_with = [&](const std::vector<int64_t>& prompt) {
    if (k + int64_t(prompt.size()) > L) return false;
    return std::equal(prompt.begin(), prompt.end(), p + k);
  };
  int64_t g;
  if (starts_with(chat_[size_t(i)])) {
    g = k + int64_t(chat_[size_t(i)].size());
  } else if (starts_with(raw_[size_t(i)])) {
    g = k + int64_t(raw_[size_t(i)].size());
  } else {
    CL_FAIL("metric gsm8k: sample " << i << " does not start with the question of line " << lines_[size_t(i)] << " of `"
                                    << o_.prompts << "` (after its left padding), with or without the chat template: "
                                    << "give the metric the mdlm_text pipeline's prompts and tokenizer");
  }
  std::vector<int64_t> ids;
  for (int64_t j = g; j < L; ++j) {
    if (std::find(stops_.begin(), stops_.end(), p[j]) != stops_.end()) break;
    if (known(p[j])) ids.push_back(p[j]);
  }
  return tok_->decode(ids, /*skip_special=*/true);
}

double Gsm8kMetric::accuracy(const at::Tensor& tokens) const {
  CL_CHECK(tokens.defined() && tokens.dim() == 2 && !tokens.is_floating_point(),
           "metric gsm8k grades token ids [N, L]: these samples are not (an mdlm_text pipeline's run is)");
  const int64_t N = tokens.size(0);
  CL_CHECK(N > 0, "metric gsm8k: no samples");
  CL_CHECK(N <= int64_t(answers_.size()), "metric gsm8k: " << N << " samples but `" << o_.prompts << "` has "
                                                          << answers_.size() << " questions: sample i is line i");
  int64_t right = 0;
  for (int64_t i = 0; i < N; ++i) {
    const std::string& want = answers_[size_t(i)];
    CL_CHECK(!want.empty(), "metric gsm8k: line " << lines_[size_t(i)] << " of `" << o_.prompts
                                                  << "` has no \"answer\" with a number (GSM8K's ends in `#### N`)");
    const std::string got = gsm8k_extract_answer(generation(tokens[i], i));
    right += !got.empty() && got == want;
  }
  return double(right) / double(N);
}

std::vector<std::pair<std::string, double>> Gsm8kMetric::compute(const MetricInputs& in) {
  const double here = accuracy(in.samples);
  std::vector<std::pair<std::string, double>> out = {{"gsm8k_accuracy", here}};
  if (in.reference.defined()) {
    const double ref = accuracy(in.reference);
    out.push_back({"gsm8k_accuracy_reference", ref});
    out.push_back({"gsm8k_accuracy_loss", ref - here});  // accuracy lost against the reference (negative: gained)
    out.push_back({"gsm8k_accuracy_retained", ref > 0 ? here / ref : std::numeric_limits<double>::quiet_NaN()});
  }
  return out;
}

}  // namespace cachelab
