// The masked-LM decoding rules (framework/lm_decoder.h; the `mdlm` pipeline's `decoder:`).
// Every rule predicts the greedy argmax token at each masked position of the block; they
// differ in which positions commit now. Confidence is the softmax probability of that token
// (computed in float64, as LLaDA's generate.py does).
//
//   low_confidence  LLaDA's baseline: a fixed number per step (the schedule's quota), the most
//                   confident first.
//   random          LLaDA's random remasking: the quota, in a random order (seeded per batch).
//   threshold       Fast-dLLM's confidence-threshold parallel decoding: every masked position
//                   whose confidence is >= threshold, and always the most confident one.
//   factor          Fast-dLLM's factor-based parallel decoding: with the masked confidences
//                   sorted c_1 >= c_2 >= ..., the largest n with (n + 1)(1 - c_n) < factor,
//                   at least 1.
//   sliding_window  Deferred Commitment Decoding (DCD, Shu et al. 2026, shuyingte/DCD): no
//                   fixed blocks; a window over the masked positions that holds `window`
//                   masked tokens (the sample with the most), starts at the first position
//                   still masked in any sample and, after each step, extends right by as
//                   many positions as the step committed (at most `max_span` long). Its
//                   `commit` rule (threshold by default, as the paper) picks the positions
//                   that commit; an uncertain token stays masked while the window slides past
//                   its right neighbours, instead of being forced out at a block's end.
//   wedlm           WeDLM's streaming parallel decoding (Liu et al. 2025, tencent/WeDLM): a window
//                   of `window` positions from the first still-masked one (DCD's sliding window
//                   with max_span = window), and the masked positions whose entropy plus
//                   `penalty` x (distance from the sample's first masked position) is below
//                   `threshold` commit, else the one where that sum is least. On a topological
//                   model (llada's topological) with block_kv, the leading run of decoded
//                   tokens is the exact prefix cache WeDLM's causal attention allows; window 1
//                   is left-to-right autoregressive decoding.
// threshold and factor may finish a block before steps_per_block steps; the pipeline then
// skips the block's remaining steps (no forward). Set steps_per_block = block_length so a
// block can always finish one token per step.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <utility>

#include "framework/config.h"
#include "framework/lm_decoder.h"

namespace cachelab {

// The greedy prediction at every position of logits [B, N, V]: the softmax probability of
// the argmax token in float64 (as LLaDA's generate.py) and that token: {confidence, tokens}.
std::pair<at::Tensor, at::Tensor> greedy_confidence(const at::Tensor& logits);

struct LowConfidenceOptions {
  template <class V>
  void fields(V&) {}
  template <class C>
  void check(C&) const {}
};

struct ThresholdDecodingOptions {
  double threshold = 0.9;
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "commit every masked token whose confidence is >= this (and always the most confident)");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold > 0 && threshold <= 1, "threshold", "must be in (0, 1]");
  }
};

// Credit decoding (dInfer's CreditThresholdParallelDecoder; Trace Credits, arXiv 2510.06133):
// threshold decoding on logits fused with a credit every position earns for its top token
// over the block's steps. Per block a credit C [B, N, V] starts at 0; at each later step
// C *= decay, then each masked position adds p1^gamma to its current top-1 token (p1 that
// token's probability); the decision is the threshold rule on logits + alpha log(1 + C)
// (tokens and confidences both from the fused logits). A token that stays on top keeps
// gaining: it commits earlier than its own confidence alone would let it.
struct CreditDecodingOptions {
  double threshold = 0.9;
  double alpha = 0.7;   // dInfer's credit_alpha
  double gamma = 0.2;   // boost_gamma: p1^gamma
  double decay = 0.8;   // decay_beta per step
  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "commit every masked token whose fused confidence is >= this (and always the most confident)");
    v("alpha", alpha, "weight of the credit: logits + alpha log(1 + credit) (dInfer's credit_alpha)");
    v("gamma", gamma, "a step adds p1^gamma to the credit of a masked position's top token (boost_gamma)");
    v("decay", decay, "credit kept from one step to the next (decay_beta)");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold > 0 && threshold <= 1, "threshold", "must be in (0, 1]");
    c.require(alpha >= 0, "alpha", "must be >= 0");
    c.require(gamma > 0, "gamma", "must be > 0");
    c.require(decay >= 0 && decay <= 1, "decay", "must be in [0, 1]");
  }
};

struct FactorDecodingOptions {
  double factor = 1.0;
  template <class V>
  void fields(V& v) {
    v("factor", factor, "commit the n most confident masked tokens, n the largest with (n + 1)(1 - c_n) < factor");
  }
  template <class C>
  void check(C& c) const {
    c.require(factor > 0, "factor", "must be > 0");
  }
};

struct SlidingWindowOptions {
  int window = 16;   // the reference's initial_window_length (16 in its LLaDA runs)
  int max_span = 0;  // the reference's max_window_length (128 there); 0 = up to the generation's end
  ComponentSpec commit{"lm_decoder", {}};  // empty = threshold 0.9, the paper's rule

  template <class V>
  void fields(V& v) {
    v("window", window, "masked positions the sliding window holds: it starts at the first position still masked and, "
                        "after each step, extends right by as many positions as were committed (DCD's initial_window_length)");
    v("max_span", max_span, "longest window in positions, committed ones inside it included (DCD's max_window_length); "
                            "0 = up to the generation's end");
    v("commit", commit, "which masked positions of the window commit at a step (an lm_decoder: threshold, low_confidence, "
                        "random, factor); empty = {type: threshold, threshold: 0.9}");
  }
  template <class C>
  void check(C& c) const {
    c.require(window >= 1, "window", "must be >= 1 (masked positions the window holds)");
    c.require(max_span == 0 || max_span >= window, "max_span", "must be 0 (no cap) or >= window");
  }
};

struct WedlmDecodingOptions {
  int window = 16;         // the reference's wedlm_window_size
  double threshold = 0.4;  // wedlm_entropy_threshold (its web demo's default; nats)
  double penalty = 0.02;   // wedlm_pos_penalty_factor
  template <class V>
  void fields(V& v) {
    v("window", window, "positions of the decoding window, from the first still-masked one (wedlm_window_size); "
                        "1 = left-to-right autoregressive decoding");
    v("threshold", threshold, "commit every masked position of the window whose entropy (nats) + penalty x distance "
                              "is below this (wedlm_entropy_threshold), and always the least");
    v("penalty", penalty, "entropy added per position of distance from the first masked position "
                          "(wedlm_pos_penalty_factor)");
  }
  template <class C>
  void check(C& c) const {
    c.require(window >= 1, "window", "must be >= 1");
    c.require(threshold > 0, "threshold", "must be > 0 (nats)");
    c.require(penalty >= 0, "penalty", "must be >= 0");
  }
};

class LowConfidenceDecoder final : public LmDecoder {
 public:
  explicit LowConfidenceDecoder(const LowConfidenceOptions&) {}
  UnmaskChoice choose(const UnmaskStep& step) const override;
};

class RandomDecoder final : public LmDecoder {
 public:
  explicit RandomDecoder(const LowConfidenceOptions&) {}
  UnmaskChoice choose(const UnmaskStep& step) const override;
};

class ThresholdDecoder final : public LmDecoder {
 public:
  explicit ThresholdDecoder(const ThresholdDecodingOptions& o) : o_(o) {}
  UnmaskChoice choose(const UnmaskStep& step) const override;

 private:
  ThresholdDecodingOptions o_;
};

// Stateful across a block's steps: the credit starts over at a block's first step (inner 0)
// and whenever the block's shape changes. For fixed blocks (in a sliding window the positions
// move under the credit).
class CreditDecoder final : public LmDecoder {
 public:
  explicit CreditDecoder(const CreditDecodingOptions& o) : o_(o) {}
  UnmaskChoice choose(const UnmaskStep& step) const override;
  // The logits the threshold rule reads at this step (updates the credit).
  at::Tensor fuse(const UnmaskStep& step) const;

 private:
  CreditDecodingOptions o_;
  mutable at::Tensor credit_;  // [B, N, V] float32
};

class FactorDecoder final : public LmDecoder {
 public:
  explicit FactorDecoder(const FactorDecodingOptions& o) : o_(o) {}
  UnmaskChoice choose(const UnmaskStep& step) const override;

 private:
  FactorDecodingOptions o_;
};

// Deferred Commitment Decoding: the window (DecodeWindow) is the pipeline's to run; a step's
// choice is the `commit` rule's on the window's positions.
class SlidingWindowDecoder final : public LmDecoder {
 public:
  explicit SlidingWindowDecoder(const SlidingWindowOptions& o);
  UnmaskChoice choose(const UnmaskStep& step) const override;
  DecodeWindow window() const override { return {o_.window, o_.max_span}; }

 private:
  SlidingWindowOptions o_;
  std::shared_ptr<const LmDecoder> commit_;
};

class WedlmDecoder final : public LmDecoder {
 public:
  explicit WedlmDecoder(const WedlmDecodingOptions& o) : o_(o) {}
  UnmaskChoice choose(const UnmaskStep& step) const override;
  DecodeWindow window() const override { return {o_.window, o_.window}; }

 private:
  WedlmDecodingOptions o_;
};

}  // namespace cachelab
