// The `mdlm` pipeline: block-wise decoding of a masked-diffusion LM (LLaDA's semi-
// autoregressive sampler with low-confidence remasking).
//
// The sequence is prompt + gen_length MASK tokens. The generation is decoded in blocks of
// block_length tokens, left to right (outer loop, StepIndex::outer = block); each block takes
// steps_per_block denoising steps (inner loop, StepIndex::inner = step). A step runs the model
// with Cond::context = prompt + finished blocks, takes the greedy argmax token and its
// softmax probability at every masked position of the current block, and unmasks the most
// confident ones: a fixed number per step (block_length / steps_per_block, the first
// block_length % steps_per_block steps one more, as LLaDA), so a block is fully decoded
// after its steps and the run unmasks exactly gen_length tokens. Deterministic: no sampling.
//
// The prompt is Cond::tokens when the condition has them ([B, P] int64), else P =
// prompt_length tokens drawn uniformly from the vocabulary by the batch's seeded generator
// (argmax of Gaussian noise over the vocabulary): the same for the reference and every
// variant. Output: the final token ids [B, P + gen_length] int64. The sample after each step
// (/steps, references) is the token sequence. /steps/t is 1000 x the masked fraction of the
// generation when the step starts. Needs a MaskedLm backbone and run.cfg_scale = 1.
#pragma once
#include "framework/pipeline.h"

namespace cachelab {

struct MdlmPipelineOptions {
  int prompt_length = 8;    // tokens of a generated prompt (ignored when the condition has tokens)
  int gen_length = 16;      // tokens generated
  int block_length = 8;     // tokens per block (divides gen_length)
  int steps_per_block = 4;  // denoising steps per block

  template <class V>
  void fields(V& v) {
    v("prompt_length", prompt_length, "tokens of the generated prompt (when the condition brings none)");
    v("gen_length", gen_length, "tokens to generate");
    v("block_length", block_length, "tokens per block, decoded left to right; divides gen_length");
    v("steps_per_block", steps_per_block, "denoising steps per block (unmasks block_length / steps tokens each)");
  }
  template <class C>
  void check(C& c) const {
    c.require(prompt_length >= 1, "prompt_length", "must be >= 1");
    c.require(gen_length >= 1, "gen_length", "must be >= 1");
    c.require(block_length >= 1 && gen_length % block_length == 0, "block_length", "must divide gen_length");
    c.require(steps_per_block >= 1 && steps_per_block <= block_length, "steps_per_block",
              "must be in [1, block_length]");
  }
};

class MdlmPipeline final : public Pipeline {
 public:
  explicit MdlmPipeline(const MdlmPipelineOptions& o);
  int num_steps(const Sampler* sampler) const override;
  int inner_steps(const Sampler* sampler) const override;
  int64_t timestep(const Sampler* sampler, int i) const override;
  at::Tensor run(const PipelineInputs& in, StepDriver& driver) const override;
  // Tokens unmasked at step `inner` of a block.
  int tokens_at_step(int inner) const;

 private:
  MdlmPipelineOptions o_;
};

}  // namespace cachelab
