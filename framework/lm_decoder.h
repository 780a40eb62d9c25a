// How a masked-diffusion LM's decoding picks the tokens it commits at a step (the `mdlm`
// pipeline's `decoder:` option; registry lm_decoders()). The pipeline runs the model on the
// current block, then asks the decoder which of the block's still-masked positions take
// their predicted token now; the rest stay masked for a later step. A decoder may finish a
// block in fewer steps than the pipeline's steps_per_block (threshold decoding): the
// pipeline then skips the block's remaining steps without a forward.
// A decoder may instead ask for a sliding window (window(); Deferred Commitment Decoding,
// models/lm_decoders.h `sliding_window`): the pipeline then decodes in a window over the
// masked positions that slides right as its leftmost positions commit, instead of fixed
// blocks, and the positions below are the window's.
#pragma once
#include <ATen/core/Tensor.h>

namespace cachelab {

struct UnmaskStep {
  at::Tensor logits;  // [B, N, V] float, the current block's positions (N = block_length, or the window's span)
  at::Tensor masked;  // [B, N] bool: still MASK before this step
  at::Tensor noise;   // [B, N] float standard normal, seeded per batch and step (random orders)
  int inner = 0;      // step within the block (sliding window: the run's step modulo steps_per_block)
  int steps = 1;      // the pipeline's steps_per_block
  int quota = 0;      // tokens the fixed schedule unmasks at this step (LLaDA's rule)
  // A floor under a threshold rule's threshold at this step (threshold, credit): dInfer's
  // iteration smoothing starts it at 1 and lowers it every forward. 0 = none.
  double min_threshold = 0;
};

// The window a decoder asks for; masked = 0: the pipeline's fixed blocks.
struct DecodeWindow {
  int masked = 0;    // masked positions the window holds when it (re)fills (per sample, the most masked one)
  int max_span = 0;  // the window's longest span in positions, committed ones inside it included; 0 = no cap
};

struct UnmaskChoice {
  at::Tensor unmask;  // [B, N] bool: positions decoded now (a subset of `masked`)
  at::Tensor tokens;  // [B, N] int64: the tokens they take
};

class LmDecoder {
 public:
  virtual ~LmDecoder() = default;
  virtual UnmaskChoice choose(const UnmaskStep& step) const = 0;
  virtual DecodeWindow window() const { return {}; }
};

}  // namespace cachelab
