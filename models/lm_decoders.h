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
// threshold and factor may finish a block before steps_per_block steps; the pipeline then
// skips the block's remaining steps (no forward). Set steps_per_block = block_length so a
// block can always finish one token per step.
#pragma once
#include "framework/lm_decoder.h"

namespace cachelab {

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

class FactorDecoder final : public LmDecoder {
 public:
  explicit FactorDecoder(const FactorDecodingOptions& o) : o_(o) {}
  UnmaskChoice choose(const UnmaskStep& step) const override;

 private:
  FactorDecodingOptions o_;
};

}  // namespace cachelab
