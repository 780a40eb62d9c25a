// `gsm8k`: the accuracy of a masked-diffusion LM's answers to GSM8K-style questions decoded by
// the `mdlm_text` pipeline (models/mdlm_text.h). Options `prompts` and `tokenizer`: the
// pipeline's files. Sample i is graded against line i's "answer".
//
// Where the generation starts: the sample's leading pad tokens (`<|endoftext|>`, else
// `<|eot_id|>`: the pipeline's left padding) are dropped, and what follows must be line i's
// prompt exactly, as the pipeline encodes it with the chat template or without (either is
// accepted, so the metric needs no `chat` option); the generation is everything after it. A
// sample that does not start so is an error (the metric's files are not the run's). The
// generation is cut at its first `<|eot_id|>` or `<|endoftext|>` and decoded with special
// tokens skipped; ids the tokenizer does not know (LLaDA's unused embedding rows) decode to
// nothing.
//
// The answer of a text (the generation, and line i's reference answer alike): the first number
// after the last `####` when one follows it, else the last number of the text. A number is
// `-?[0-9][0-9,]*(\.[0-9]+)?` (so `$1,234.50` reads 1234.50); commas are removed, and a
// decimal part of zeros, leading zeros and a minus zero are normalised away, then the strings
// are compared ("72.00" = "72"; no number = wrong). GSM8K's answers are integers.
//
// Reports gsm8k_accuracy, and against the reference (uncached) run gsm8k_accuracy_reference,
// gsm8k_accuracy_loss (reference minus this run) and gsm8k_accuracy_retained (this run over the
// reference; NaN when the reference answers none), as exact_match does.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "metrics/metrics.h"

namespace cachelab {

class BpeTokenizer;

struct Gsm8kOptions {
  std::string prompts;    // the pipeline's JSONL file (with "answer" on every graded line)
  std::string tokenizer;  // the pipeline's tokenizer.json
  template <class V>
  void fields(V& v) {
    v("prompts", prompts, "the mdlm_text pipeline's JSONL file; each graded line needs an \"answer\" ending in `#### N`");
    v("tokenizer", tokenizer, "the mdlm_text pipeline's tokenizer.json");
  }
};

// The final answer of a text, normalised (see the header comment); "" when it holds no number.
std::string gsm8k_extract_answer(const std::string& text);

class Gsm8kMetric final : public Metric {
 public:
  explicit Gsm8kMetric(const Gsm8kOptions& o);
  ~Gsm8kMetric() override;
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;

  // The generation of sample `row` (token ids [L]) of line i, decoded (tests, debugging).
  std::string generation(const at::Tensor& row, int64_t i) const;

 private:
  double accuracy(const at::Tensor& tokens) const;
  bool known(int64_t id) const;

  Gsm8kOptions o_;
  std::string prompts_path_;
  std::unique_ptr<BpeTokenizer> tok_;
  std::vector<std::string> answers_;               // normalised, per line ("" = the line has no answer)
  std::vector<int> lines_;                         // 1-based line numbers
  std::vector<std::vector<int64_t>> chat_, raw_;   // each line's prompt ids, with / without the template
  std::vector<int64_t> stops_;                     // <|eot_id|>, <|endoftext|> when present
  int64_t pad_ = 0;
  mutable std::unordered_map<int64_t, bool> known_;
};

}  // namespace cachelab
