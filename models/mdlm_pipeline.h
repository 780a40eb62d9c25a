// The `mdlm` pipeline: block-wise decoding of a masked-diffusion LM (LLaDA's semi-
// autoregressive sampler).
//
// The sequence is prompt + gen_length MASK tokens. The generation is decoded in blocks of
// block_length tokens, left to right (outer loop, StepIndex::outer = block); each block takes
// at most steps_per_block denoising steps (inner loop, StepIndex::inner = step). A step runs
// the model with Cond::context = prompt + finished blocks, Cond::block_end = the block's end
// (logits of the block only) and Cond::token_state (prompt / masked / the step each token
// was decoded at, for K/V caches), and the decoder (`decoder:`, models/lm_decoders.h) picks
// which masked positions of the block take their greedy argmax token. The fixed schedule's
// quota per step is block_length / steps_per_block, the first block_length % steps_per_block
// steps one more, as LLaDA; at a block's last step every position still masked is decoded, so
// the run always unmasks gen_length tokens. When a decoder (threshold, factor) finishes a
// block early, its remaining steps run no forward (they count no FLOPs and keep the tokens).
// Deterministic (random remasking draws its order from the batch's seeded generator).
// A decoder with a sliding window (`sliding_window`, Deferred Commitment Decoding) replaces
// the fixed blocks: each step decodes in a window [context, block_end) that starts at the
// first position still masked and holds the decoder's `window` masked positions; within the
// same T steps (the fixed schedule's StepIndex), a sample with r masked tokens and k steps
// left commits at least ceil(r / k), so the run always ends decoded (see run()).
// end_of_text (Learn2PD's End-of-Text Prediction): after each step, a sample whose generation
// holds a committed EOS has every masked position after its first one set to EOS (decoded at
// this step); blocks left with nothing masked then run no forward.
// smooth_weight > 0 (dInfer's iteration smoothing, IterSmoothDiffusionLLM; our reading): after
// forward i (counted over the generation) the block's still-masked positions carry w_i x the
// softmax of its logits as Cond::soft_tokens, w_i = min(smooth_init + smooth_growth x i,
// smooth_weight), so the next forward sees MASK mixed with what the model predicted there; and
// at forward i a threshold decoder's threshold is at least 1 - threshold_decay x i (0: no floor).
// cfg_scale > 0: SMDM's unsupervised classifier-free guidance as LLaDA's generate.py applies
// it: each step also runs the sequence with its prompt replaced by MASK (one forward on the
// doubled batch) and decodes from u + (cfg_scale + 1)(c - u). Not run.cfg_scale, which is
// the image pipelines' guidance and must stay 1 here.
//
// The prompt is Cond::tokens when the condition has them ([B, P] int64), else P =
// prompt_length tokens drawn uniformly from the vocabulary by the batch's seeded generator
// (argmax of Gaussian noise over the vocabulary): the same for the reference and every
// variant. Output: the final token ids [B, P + gen_length] int64. The sample after each step
// (/steps, references) is the token sequence. /steps/t is 1000 x the masked fraction of the
// generation when the step starts. Needs a MaskedLm backbone and run.cfg_scale = 1.
//
// With `task` set (framework/lm_tasks.h: addition, multiplication, sorting, reversal,
// word_problems), the prompts are that task's test-split problems: sample i of a run is test
// problem i of the generator seeded with task_seed + the run's seed (so `sweep: {seed: [0, 1,
// 2]}` decodes three problem sets); prompt_length is then the task's, and gen_length must be
// at least the task's, whose answers the `exact_match` metric checks. A visual task
// (read_digits, sum_digits, spell_digits) also brings its images' patches as Cond::embeddings
// and the numbers they show as Cond::labels (what exact_match grades against); it needs a
// vision-language model whose visual tokens match (llada's vision_tokens, vision_dim).
#pragma once
#include <memory>

#include "framework/config.h"
#include "framework/lm_decoder.h"
#include "framework/pipeline.h"
#include "framework/lm_tasks.h"

namespace cachelab {

struct MdlmPipelineOptions {
  int prompt_length = 8;    // tokens of a generated prompt (ignored when the condition has tokens)
  int gen_length = 16;      // tokens generated
  int block_length = 8;     // tokens per block (divides gen_length)
  int steps_per_block = 4;  // denoising steps per block
  LmTaskOptions task;       // prompts from a task's test split (task.task "" = generated prompts)
  ComponentSpec decoder{"lm_decoder", {}};  // which masked positions commit at a step (empty = low_confidence)
  double cfg_scale = 0;     // SMDM / LLaDA unsupervised classifier-free guidance; 0 = off
  bool end_of_text = false; // Learn2PD's End-of-Text Prediction: after a committed EOS, the rest is EOS
  int64_t eos_id = -1;      // the EOS token end_of_text looks for (-1 = the task tokenizer's EOS)
  // dInfer's iteration smoothing (IterSmoothDiffusionLLM; our reading): 0 = off.
  double smooth_weight = 0;       // cont_weight: the largest weight of the previous forward's distribution
  double smooth_init = 0.15;      // cont_weight_init: the weight after the first forward
  double smooth_growth = 0.02;    // cont_weight_growth: added per forward
  double threshold_decay = 0.02;  // the threshold floor starts at 1 and falls by this per forward

  template <class V>
  void fields(V& v) {
    v("prompt_length", prompt_length, "tokens of the generated prompt (when the condition brings none)");
    v("gen_length", gen_length, "tokens to generate");
    v("block_length", block_length, "tokens per block, decoded left to right; divides gen_length");
    v("steps_per_block", steps_per_block, "denoising steps per block (unmasks block_length / steps tokens each)");
    task.fields(v);  // task, digits, mul_digits, length, ... (framework/lm_tasks.h)
    v("decoder", decoder, "decoding rule (models/lm_decoders.h): low_confidence (default), random, threshold, factor, "
                          "sliding_window (DCD: a sliding window instead of fixed blocks)");
    v("cfg_scale", cfg_scale, "unsupervised classifier-free guidance (SMDM, LLaDA's cfg_scale): logits = u + (s + 1)(c - u), "
                              "u from the sequence with its prompt masked; 0 = off (one forward per step, else two)");
    v("end_of_text", end_of_text, "End-of-Text Prediction (Learn2PD): once a sample commits an EOS token, its masked "
                                  "positions after it take EOS at once (blocks left all EOS run no forward)", false);
    v("eos_id", eos_id, "the EOS token end_of_text looks for; -1 = the task tokenizer's EOS (needs `task`)", int64_t(-1));
    v("smooth_weight", smooth_weight, "iteration smoothing (dInfer's cont_weight; 0.3 there): a masked position's input "
                                      "mixes MASK with the previous forward's distribution at weight min(smooth_init + "
                                      "smooth_growth x forwards, this); 0 = off (needs a model with soft inputs: llada)", 0.0);
    v("smooth_init", smooth_init, "iteration smoothing: the weight after the generation's first forward (cont_weight_init)", 0.15);
    v("smooth_growth", smooth_growth, "iteration smoothing: the weight added per forward (cont_weight_growth)", 0.02);
    v("threshold_decay", threshold_decay, "iteration smoothing: a threshold decoder's threshold is at least 1 - this x "
                                          "forwards so far (dInfer's threshold_decay); 0 = no floor (in dInfer a "
                                          "threshold of 1 throughout)", 0.02);
  }
  template <class C>
  void check(C& c) const {
    c.require(prompt_length >= 1, "prompt_length", "must be >= 1");
    c.require(gen_length >= 1, "gen_length", "must be >= 1");
    c.require(block_length >= 1 && gen_length % block_length == 0, "block_length", "must divide gen_length");
    c.require(steps_per_block >= 1 && steps_per_block <= block_length, "steps_per_block",
              "must be in [1, block_length]");
    task.check(c);
    c.require(cfg_scale >= 0, "cfg_scale", "must be >= 0 (0 = no guidance)");
    c.require(task.task != "mix", "task", "the pipeline decodes one task's test split: name the task, not mix");
    c.require(!end_of_text || eos_id >= 0 || !task.task.empty(), "eos_id",
              "end_of_text needs the EOS token: set eos_id, or a task (its tokenizer's EOS)");
    c.require(smooth_weight >= 0 && smooth_weight <= 1, "smooth_weight", "must be in [0, 1] (0 = no smoothing)");
    c.require(smooth_init >= 0 && smooth_init <= 1, "smooth_init", "must be in [0, 1]");
    c.require(smooth_growth >= 0, "smooth_growth", "must be >= 0");
    c.require(threshold_decay >= 0, "threshold_decay", "must be >= 0");
  }
};

class MdlmPipeline final : public Pipeline {
 public:
  explicit MdlmPipeline(const MdlmPipelineOptions& o);
  // With a decoder built elsewhere (a trainer recording what the decoder sees); o.decoder unused.
  MdlmPipeline(const MdlmPipelineOptions& o, std::shared_ptr<const LmDecoder> decoder);
  int num_steps(const Sampler* sampler) const override;
  int inner_steps(const Sampler* sampler) const override;
  int64_t timestep(const Sampler* sampler, int i) const override;
  at::Tensor run(const PipelineInputs& in, StepDriver& driver) const override;
  // With a task: its test problems [start, start + n) as Cond::tokens [n, P] (PAD-left-padded).
  Cond condition(const Backbone& backbone, int64_t start, int64_t n) const override;
  // With a task: the problems of generator seed task_seed + seed.
  Cond seeded_condition(const Backbone& backbone, int64_t start, int64_t n, int64_t seed) const override;
  int64_t tokens_per_sample() const override { return o_.gen_length; }
  // Tokens unmasked at step `inner` of a block.
  int tokens_at_step(int inner) const;

 private:
  MdlmPipelineOptions o_;
  std::shared_ptr<const LmDecoder> decoder_;
  DecodeWindow window_;  // the decoder's sliding window (masked = 0: fixed blocks)
};

// The condition of samples [start, start + n) of a run of seed `seed` decoding task `o` (its
// test problems as Cond::tokens), checked against the backbone and gen_length; `who` names the
// pipeline in errors. Shared by the mdlm and tidar pipelines.
Cond task_condition(const Backbone& backbone, const LmTaskOptions& o, int64_t gen_length, const char* who, int64_t start,
                    int64_t n, int64_t seed);

}  // namespace cachelab
