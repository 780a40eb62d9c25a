// Learn2PD (Bao et al., 2025, "Learning to Parallel"): a small filter model, trained after the
// LM, predicts for each masked position of a block whether the LM's current prediction is
// already the token the decoding ends with; the positions it trusts commit together.
//
// Our reading. The filter is an MLP over one block of N positions: its input is, per
// position, the confidence of the predicted token (1 at positions already committed) and
// whether the position is still masked ([B, 2N]); one hidden ReLU layer; N logits out.
// Trained (`cachelab train` with `model: learn2pd`) on the LM's own decoding of training-
// split problems by the baseline rule (one token per step, the most confident first, LLaDA):
// at every step, a masked position's label is whether its argmax then equals the token it
// finally took (the oracle the paper approximates); binary cross-entropy over masked positions.
// The `learn2pd` decoder commits every masked position whose filter probability is >=
// `threshold`, and always the most confident one. End-of-Text Prediction is the pipeline's
// `end_of_text` (models/mdlm_pipeline.h).
//
// Filter file (safetensors): w1 [H, 2N], b1 [H], w2 [N, H], b2 [N] float32; metadata format
// "cachelab learn2pd filter 1", block_length, backbone_digest, config_yaml.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/lm_decoder.h"
#include "framework/lm_tasks.h"

namespace cachelab {

class Backbone;

// The filter's input for one step: [B, 2N] float32 from the step's logits and masked positions.
at::Tensor learn2pd_features(const at::Tensor& logits, const at::Tensor& masked);

struct Learn2pdFilter {
  at::Tensor w1, b1, w2, b2;
  int64_t block_length() const { return w2.size(0); }
  at::Tensor logits(const at::Tensor& features) const;  // [B, 2N] -> [B, N]
  static Learn2pdFilter load(const std::string& path);
};

struct Learn2pdOptions {
  std::string filter;      // the trained filter (safetensors)
  double threshold = 0.9;  // commit where the filter's probability is >= this

  template <class V>
  void fields(V& v) {
    v("filter", filter, "the trained filter file (`cachelab train` with `model: learn2pd`, configs/train/)");
    v("threshold", threshold, "commit every masked position whose filter probability is >= this (and always the most confident)");
  }
  template <class C>
  void check(C& c) const {
    c.require(!filter.empty(), "filter", "must name the trained filter file");
    c.require(threshold > 0 && threshold < 1, "threshold", "must be in (0, 1)");
  }
};

class Learn2pdDecoder final : public LmDecoder {
 public:
  explicit Learn2pdDecoder(const Learn2pdOptions& o);
  UnmaskChoice choose(const UnmaskStep& step) const override;

 private:
  Learn2pdOptions o_;
  Learn2pdFilter filter_;
};

struct Learn2pdTrainOptions {
  LmTaskOptions task;        // the tasks whose training problems are decoded (task or mix)
  int problems = 512;        // training-split problems decoded per task
  int block_length = 8;      // the pipeline's block length the filter is made for
  int batch = 64;            // problems decoded at once
  int hidden = 64;           // the filter's hidden width
  int iterations = 2000;     // Adam steps (full batch)
  double lr = 3e-3;
  int64_t seed = 0;          // of the filter's initialisation and the problems' offset
  int threads = 1;
  std::string output = "models/weights/learn2pd-llada-tasks.safetensors";

  template <class V>
  void fields(V& v) {
    task.fields(v);
    v("problems", problems, "training-split problems decoded per task (the filter's data: every step of each)");
    v("block_length", block_length, "block length of the decoding the filter serves (its input is one block)");
    v("batch", batch, "problems decoded at once");
    v("hidden", hidden, "hidden width of the filter MLP");
    v("iterations", iterations, "full-batch Adam steps");
    v("lr", lr, "Adam learning rate");
    v("seed", seed, "seed of the initialisation and of the problems' offset in the training split");
    v("threads", threads, "CPU threads");
    v("output", output, "where the filter is written");
  }
  template <class C>
  void check(C& c) const {
    task.check(c);
    c.require(!task.task.empty(), "task", "must be set (a task or mix)");
    c.require(problems >= 1, "problems", "must be >= 1");
    c.require(block_length >= 1, "block_length", "must be >= 1");
    c.require(batch >= 1, "batch", "must be >= 1");
    c.require(hidden >= 1, "hidden", "must be >= 1");
    c.require(iterations >= 1, "iterations", "must be >= 1");
    c.require(lr > 0, "lr", "must be > 0");
    c.require(threads >= 1, "threads", "must be >= 1");
    c.require(!output.empty(), "output", "must be set");
  }
};

// Decodes each task's training problems with `lm` (a MaskedLm backbone with trained weights,
// `digest` its file digest) and fits the filter; prints the data's size and the filter's
// accuracy on a held-out tenth; writes o.output.
void train_learn2pd(Backbone& lm, const Learn2pdTrainOptions& o, const std::string& config_yaml, const std::string& digest);

}  // namespace cachelab
