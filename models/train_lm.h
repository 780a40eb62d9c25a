// Supervised fine-tuning of a masked-diffusion LM on the exactly-checkable tasks
// (framework/lm_tasks.h) with LLaDA's SFT objective, resumable (TrainRun in models/train.h).
//
// Objective (LLaDA, Nie et al. 2025, SFT): a sample is prompt (P tokens) + answer (G tokens,
// padded with EOS). Per sample t ~ U(mask_eps, 1); each answer token is replaced by MASK
// with probability t (the prompt never is); the loss is the cross-entropy of the masked
// tokens weighted by 1 / t, summed and divided by the answer length G, averaged over the
// batch. A block-causal backbone (llada's block_size, Fast-dLLM v2's block diffusion) learns
// one block per sample: a block k of the answer drawn uniformly is masked with ratio t, the
// blocks before it stay clean, and the loss is normalised by k's length instead. A topological
// backbone (llada's topological, WeDLM) learns a streaming window: from a start s drawn
// uniformly over the answer, `window` positions are masked with ratio t, the answer before s
// is clean and after the window MASK without loss (as decoding shows it); the loss is
// normalised by the window's length. A TiDAR backbone (llada's tidar) learns its dual objective
// (Liu et al. 2025): prompt + answer as causal tokens with next-token targets, then the whole
// answer masked in the model's draft blocks (each sees the clean tokens before it, at the
// answer's positions); per sample the mean AR cross-entropy plus the mean mask cross-entropy.
// A `mix` task splits every batch among its tasks by weight (each task keeps its own
// lengths, so its sub-batch is rectangular).
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>

#include "framework/backbone.h"
#include "framework/lm_tasks.h"
#include "models/masked_lm.h"
#include "models/train.h"

namespace cachelab {

struct LmTrainOptions : TrainOptions {
  LmTaskOptions task;
  double mask_eps = 1e-3;  // t ~ U(mask_eps, 1)
  int window = 0;          // topological models: positions masked with ratio t after the clean prefix; 0 = the rest
  LmTrainOptions() {
    steps = 4000;
    batch_size = 64;
    lr = 1e-3;
    warmup = 200;
    ema_decay = 0.999;
    checkpoint_every = 250;
    checkpoint_dir = "checkpoints/llada-tasks";
    output = "models/weights/llada-tasks.safetensors";
    task.task = "mix";
  }
  template <class V>
  void fields(V& v) {
    run_fields(v, "problems per step (a mix splits them among its tasks by weight)",
               "seed of the training problems, mask ratios and masks");
    v("mask_eps", mask_eps, "the mask ratio t is drawn from U(mask_eps, 1)");
    v("window", window, "topological models (WeDLM): the answer is clean before a uniform start, masked with ratio "
                        "t over this many positions from it and MASK (no loss) after; 0 = up to the answer's end", 0);
    task.fields(v);
  }
  template <class C>
  void check(C& c) const {
    run_check(c);
    c.require(mask_eps > 0 && mask_eps < 1, "mask_eps", "must be in (0, 1)");
    c.require(window >= 0, "window", "must be >= 0 (0 = up to the answer's end)");
    c.require(!task.task.empty(), "task", "must be set (a task or mix)");
    task.check(c);
  }
};

// Per-sample SFT losses [B] (float32, differentiable) of prompts [B, P] and answers [B, G]
// (int64 token ids < the model's vocabulary, MASK excluded): t and the masks are drawn from
// `gen`; the model sees the masked sequence at timestep 1000 t. A vision-language model gets
// the images' patches (`images`, Cond::embeddings; LmTask::encode_images).
at::Tensor masked_lm_loss(Backbone& model, const at::Tensor& prompt, const at::Tensor& answer, at::Generator gen,
                          double mask_eps, int64_t window = 0, const at::Tensor& images = at::Tensor());

// Trains (or resumes) `model` (a MaskedLm backbone, freshly initialised) on o.task; prints
// progress; writes checkpoints, the EMA weights (metadata: step, format, config_yaml) and the
// loss curve, as train_diffusion does.
void train_masked_lm(Backbone& model, const LmTrainOptions& o, const std::string& config_yaml);

}  // namespace cachelab
