// The `tidar` pipeline: TiDAR's decoding (Liu et al. 2025, "Think in Diffusion, Talk in
// Autoregression"; cachelab's reading) of a TiDAR model (llada's tidar = k): one forward both
// verifies the drafts of the last step autoregressively and drafts the next ones by one-step
// diffusion.
//
// With n tokens committed (the prompt first) and drafts d_1 .. d_D at positions n .. n+D-1
// (D = draft - 1; none at the first step), a step runs the model on
//   [committed tokens][d_1 .. d_D][D + 1 blocks of `draft` MASK]
// where block a (a = 0 .. D) sits at positions n+a .. n+a+draft-1 (Cond::positions) and sees
// the committed tokens and d_1 .. d_a: the pre-draft for "a drafts accepted". The outputs at
// n-1 .. n+D-1 are the AR head's next-token predictions ar_0 .. ar_D (greedy, MASK excluded
// as every prediction here); d_j is accepted
// while d_j = ar_{j-1}. With a accepted, the step commits d_1 .. d_a and ar_a (the AR token
// after them, as speculative decoding's correction or bonus token), so every step commits at
// least one token and every committed token is the AR head's greedy choice given the tokens
// before it: the output equals greedy AR decoding of the same model, token for token. Block
// a's predictions at its positions 2 .. draft become the next drafts. A batch advances in
// lockstep: every sample commits the batch's smallest a (plus its own AR token), so at batch 1
// this is TiDAR and a larger batch runs more forwards. draft 0 = AR decoding (no blocks).
//
// Cond::context = n - 1 (the committed prefix before the last committed token is settled: an
// exact prefix K/V cache, block_kv, keeps it), Cond::block_end = the whole input. The run has
// gen_length steps (one commits at least one token); steps after the generation is complete
// run no forward. The sample after each step is prompt + generation with the tokens not yet
// committed as MASK. Prompts and the task (`task`, exact_match) as the mdlm pipeline's.
#pragma once
#include "framework/lm_tasks.h"
#include "framework/pipeline.h"

namespace cachelab {

struct TidarPipelineOptions {
  int prompt_length = 8;  // tokens of a generated prompt (ignored when the condition has tokens)
  int gen_length = 16;    // tokens generated
  int draft = 4;          // draft block length k (the model's tidar at most); 0 = AR decoding
  LmTaskOptions task;

  template <class V>
  void fields(V& v) {
    v("prompt_length", prompt_length, "tokens of the generated prompt (when the condition brings none)");
    v("gen_length", gen_length, "tokens to generate");
    v("draft", draft, "draft block length k (at most the model's tidar): each step verifies k - 1 drafts and "
                      "pre-drafts k blocks of k MASK; 0 = autoregressive decoding with the AR head alone");
    task.fields(v);
  }
  template <class C>
  void check(C& c) const {
    c.require(prompt_length >= 1, "prompt_length", "must be >= 1");
    c.require(gen_length >= 1, "gen_length", "must be >= 1");
    c.require(draft >= 0, "draft", "must be >= 0 (0 = autoregressive decoding)");
    task.check(c);
    c.require(task.task != "mix", "task", "the pipeline decodes one task's test split: name the task, not mix");
  }
};

class TidarPipeline final : public Pipeline {
 public:
  explicit TidarPipeline(const TidarPipelineOptions& o);
  int num_steps(const Sampler* sampler) const override { return o_.gen_length; }
  int64_t timestep(const Sampler* sampler, int i) const override;
  at::Tensor run(const PipelineInputs& in, StepDriver& driver) const override;
  Cond condition(const Backbone& backbone, int64_t start, int64_t n) const override;
  Cond seeded_condition(const Backbone& backbone, int64_t start, int64_t n, int64_t seed) const override;
  int64_t tokens_per_sample() const override { return o_.gen_length; }

 private:
  TidarPipelineOptions o_;
};

}  // namespace cachelab
