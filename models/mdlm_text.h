// The `mdlm_text` pipeline: the `mdlm` pipeline's block-wise decoding of a masked-diffusion LM
// (models/mdlm_pipeline.h) on prompts read from a file, tokenized by a public tokenizer.json
// (framework/bpe_tokenizer.h): a real model (LLaDA-8B-Instruct) on a real benchmark (GSM8K).
//
// `prompts` is a JSONL file (relative to the project root, as `weights` paths): one JSON object
// a line, with a "question" string and optionally an "answer" (GSM8K's test.jsonl as published;
// the `gsm8k` metric reads the answers). Blank lines are skipped. Sample i of a run is line i
// (0-based, blank lines not counted), for every seed: the seed does not change the problems
// (a sweep over seeds repeats them; with greedy decoders it repeats the runs). run.samples must
// not exceed the file's lines (checked, with the batches' prompt lengths, when the runner
// builds the pipeline, so `cachelab validate` reports it).
//
// The prompt of a line: with `chat` (default) the question as the user's message of LLaDA's chat
// template (BpeTokenizer::apply_chat_template: `<|startoftext|><|start_header_id|>user
// <|end_header_id|>\n\n` question `<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`),
// encoded without the post-processor (the template holds the BOS), as LLaDA's generate.py and
// Fast-dLLM's evaluation build it; without `chat` the raw question encoded with the
// post-processor (a BOS when the tokenizer.json adds one), as `tokenizer(question)` gives it.
//
// Lengths: a bidirectional model must not attend to padding, so one batch holds prompts of one
// length (else an error suggesting `run.batch: 1`). Every batch's output has the same width W =
// the file's longest prompt + gen_length, so the runner can concatenate batches: after
// decoding, each output [P + gen_length] is LEFT-padded to W with the pad id: the tokenizer's
// `<|endoftext|>` (LLaDA's EOS and pad token, 126081), else `<|eot_id|>`. The prompts of the
// whole file are encoded once, at construction.
//
// Checked: every prompt id and the pad id lie inside the model's vocabulary, and the model's
// MASK id is the tokenizer's `<|mdm_mask|>` id when the tokenizer has that token (a tokenizer
// of another model is refused). The decoding options (gen_length, block_length,
// steps_per_block, decoder, cfg_scale) are the mdlm pipeline's; prompt_length and task do not
// apply. Output: token ids [B, W] int64.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/pipeline.h"
#include "framework/registry.h"
#include "framework/text_prompts.h"
#include "models/mdlm_pipeline.h"

namespace cachelab {

class BpeTokenizer;

struct MdlmTextOptions {
  std::string prompts;    // JSONL: {"question": ..., "answer": ...} a line (relative to the project root)
  std::string tokenizer;  // a Hugging Face tokenizer.json (relative to the project root)
  bool chat = true;       // wrap each question with LLaDA's chat template
  int gen_length = 256;
  int block_length = 32;
  int steps_per_block = 32;
  ComponentSpec decoder{"lm_decoder", {}};
  double cfg_scale = 0;

  template <class V>
  void fields(V& v) {
    v("prompts", prompts, "JSONL file, one {\"question\": ..., \"answer\": ...} object a line (GSM8K's test.jsonl); "
                          "sample i is line i, whatever the seed");
    v("tokenizer", tokenizer, "the model's Hugging Face tokenizer.json (LLaDA-8B-Instruct's)");
    v("chat", chat, "wrap each question in LLaDA's chat template (true, as generate.py) or encode it raw with BOS (false)");
    v("gen_length", gen_length, "tokens to generate");
    v("block_length", block_length, "tokens per block, decoded left to right; divides gen_length");
    v("steps_per_block", steps_per_block, "denoising steps per block (unmasks block_length / steps tokens each)");
    v("decoder", decoder, "decoding rule (models/lm_decoders.h): low_confidence (default), random, threshold, factor, "
                          "sliding_window");
    v("cfg_scale", cfg_scale, "unsupervised classifier-free guidance (LLaDA's cfg_scale); 0 = off");
  }
  // The mdlm pipeline's options of these (generated-prompt keys at their defaults, no task).
  MdlmPipelineOptions mdlm() const {
    MdlmPipelineOptions m;
    m.gen_length = gen_length;
    m.block_length = block_length;
    m.steps_per_block = steps_per_block;
    m.decoder = decoder;
    m.cfg_scale = cfg_scale;
    return m;
  }
  template <class C>
  void check(C& c) const {
    mdlm().check(c);
  }
};

class MdlmTextPipeline final : public Pipeline {
 public:
  // With ctx.run (the runner's build): checks up front that run.samples lines exist and that
  // every batch of run.batch lines has one prompt length, so a long run does not fail late.
  explicit MdlmTextPipeline(const MdlmTextOptions& o, const BuildContext& ctx = BuildContext());
  ~MdlmTextPipeline() override;
  int num_steps(const Sampler* sampler) const override { return mdlm_.num_steps(sampler); }
  int inner_steps(const Sampler* sampler) const override { return mdlm_.inner_steps(sampler); }
  int64_t timestep(const Sampler* sampler, int i) const override { return mdlm_.timestep(sampler, i); }
  // Decodes with the mdlm pipeline, then left-pads to width() with pad_id().
  at::Tensor run(const PipelineInputs& in, StepDriver& driver) const override;
  // Lines [start, start + n) as Cond::tokens [n, P] (one prompt length per batch).
  Cond condition(const Backbone& backbone, int64_t start, int64_t n) const override;
  Cond seeded_condition(const Backbone& backbone, int64_t start, int64_t n, int64_t seed) const override;
  int64_t tokens_per_sample() const override { return mdlm_.tokens_per_sample(); }

  int64_t width() const { return max_prompt_ + opts_.gen_length; }  // every output's length
  int64_t pad_id() const { return pad_; }
  const std::vector<std::vector<int64_t>>& prompt_ids() const { return prompts_; }

 private:
  MdlmTextOptions opts_;
  MdlmPipeline mdlm_;
  std::vector<std::vector<int64_t>> prompts_;  // one per line
  int64_t max_prompt_ = 0, pad_ = 0, mask_ = -1;  // mask_: the tokenizer's <|mdm_mask|> id, -1 = none
  int64_t max_id_ = 0;                            // largest id a prompt holds (the pad included)
  std::string prompts_path_;
  // Lines [start, start + n) exist and share one prompt length (else the errors users see).
  void check_batch(int64_t start, int64_t n) const;
};

}  // namespace cachelab
