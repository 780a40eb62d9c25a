// How a masked-diffusion LM's decoding picks the tokens it commits at a step (the `mdlm`
// pipeline's `decoder:` option; registry lm_decoders()). The pipeline runs the model on the
// current block, then asks the decoder which of the block's still-masked positions take
// their predicted token now; the rest stay masked for a later step. A decoder may finish a
// block in fewer steps than the pipeline's steps_per_block (threshold decoding): the
// pipeline then skips the block's remaining steps without a forward.
#pragma once
#include <ATen/core/Tensor.h>

namespace cachelab {

struct UnmaskStep {
  at::Tensor logits;  // [B, N, V] float, the current block's positions (N = block_length)
  at::Tensor masked;  // [B, N] bool: still MASK before this step
  at::Tensor noise;   // [B, N] float standard normal, seeded per batch and step (random orders)
  int inner = 0;      // step within the block
  int steps = 1;      // the pipeline's steps_per_block
  int quota = 0;      // tokens the fixed schedule unmasks at this step (LLaDA's rule)
};

struct UnmaskChoice {
  at::Tensor unmask;  // [B, N] bool: positions decoded now (a subset of `masked`)
  at::Tensor tokens;  // [B, N] int64: the tokens they take
};

class LmDecoder {
 public:
  virtual ~LmDecoder() = default;
  virtual UnmaskChoice choose(const UnmaskStep& step) const = 0;
};

}  // namespace cachelab
