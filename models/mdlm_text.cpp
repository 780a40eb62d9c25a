#include "models/mdlm_text.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/bpe_tokenizer.h"
#include "models/masked_lm.h"

namespace cachelab {

MdlmTextPipeline::MdlmTextPipeline(const MdlmTextOptions& o, const BuildContext& ctx) : opts_(o), mdlm_(o.mdlm()) {
  CL_CHECK(!o.prompts.empty(), "pipeline mdlm_text: set `prompts:` to a JSONL file (GSM8K's test.jsonl)");
  CL_CHECK(!o.tokenizer.empty(), "pipeline mdlm_text: set `tokenizer:` to the model's tokenizer.json");
  prompts_path_ = resolve_path(o.prompts);
  const BpeTokenizer tok(resolve_path(o.tokenizer));
  const auto problems = read_text_problems(prompts_path_);
  pad_ = text_pad_id(tok);
  max_id_ = pad_;
  if (tok.has_token("<|mdm_mask|>")) mask_ = tok.token_id("<|mdm_mask|>");
  prompts_.reserve(problems.size());
  for (auto& p : problems) {
    prompts_.push_back(encode_text_prompt(tok, p.question, o.chat));
    CL_CHECK(!prompts_.back().empty(), prompts_path_ << ":" << p.line << ": the question encodes to no token");
    max_prompt_ = std::max<int64_t>(max_prompt_, int64_t(prompts_.back().size()));
    for (int64_t id : prompts_.back()) max_id_ = std::max(max_id_, id);
  }
  if (ctx.run) {
    const int64_t samples = ctx.run->samples, batch = std::max(1, ctx.run->batch);
    for (int64_t b0 = 0; b0 < samples; b0 += batch) check_batch(b0, std::min(batch, samples - b0));
  }
}

void MdlmTextPipeline::check_batch(int64_t start, int64_t n) const {
  const int64_t lines = int64_t(prompts_.size());
  CL_CHECK(start >= 0 && n >= 1 && start + n <= lines, "mdlm_text: samples [" << start << ", " << start + n
                                                           << ") asked, but `" << opts_.prompts << "` has " << lines
                                                           << " questions: set run.samples <= " << lines);
  const size_t P = prompts_[size_t(start)].size();
  for (int64_t i = start + 1; i < start + n; ++i)
    CL_CHECK(prompts_[size_t(i)].size() == P,
             "mdlm_text: questions " << start << " and " << i << " of `" << opts_.prompts << "` encode to " << P << " and "
                                     << prompts_[size_t(i)].size() << " tokens; one batch holds prompts of one length (the "
                                     << "model attends to every position, so no padding): set `run.batch: 1`");
}

MdlmTextPipeline::~MdlmTextPipeline() = default;

Cond MdlmTextPipeline::condition(const Backbone& backbone, int64_t start, int64_t n) const {
  const auto* lm = dynamic_cast<const MaskedLm*>(&backbone);
  CL_CHECK(lm, "the mdlm_text pipeline needs a masked-diffusion LM backbone (llada)");
  CL_CHECK(max_id_ < lm->vocab_size(), "mdlm_text: the prompts of `" << opts_.prompts << "` (tokenizer `" << opts_.tokenizer
                                           << "`) hold id " << max_id_ << ", outside the model's vocabulary of "
                                           << lm->vocab_size() << ": the tokenizer is not this model's");
  CL_CHECK(mask_ < 0 || mask_ == lm->mask_id(), "mdlm_text: the tokenizer `" << opts_.tokenizer << "` has <|mdm_mask|> = "
                                                    << mask_ << " but the model's MASK id is " << lm->mask_id()
                                                    << ": the tokenizer is not this model's");
  check_batch(start, n);
  const size_t P = prompts_[size_t(start)].size();
  std::vector<int64_t> flat;
  flat.reserve(size_t(n) * P);
  for (int64_t i = start; i < start + n; ++i) flat.insert(flat.end(), prompts_[size_t(i)].begin(), prompts_[size_t(i)].end());
  Cond c;
  c.tokens = at::tensor(flat, at::kLong).view({n, int64_t(P)});
  return c;
}

Cond MdlmTextPipeline::seeded_condition(const Backbone& backbone, int64_t start, int64_t n, int64_t) const {
  return condition(backbone, start, n);  // line i is sample i whatever the seed
}

at::Tensor MdlmTextPipeline::run(const PipelineInputs& in, StepDriver& driver) const {
  CL_CHECK(in.cond.tokens.defined(), "mdlm_text: the batch has no prompt tokens (the runner asks condition())");
  at::Tensor x = mdlm_.run(in, driver);
  if (!x.defined()) return x;
  const int64_t left = width() - x.size(1);
  CL_CHECK(left >= 0, "internal: mdlm_text output wider than the longest prompt + gen_length");
  if (left == 0) return x;
  return at::cat({at::full({x.size(0), left}, pad_, x.options()), x}, 1);
}

}  // namespace cachelab
