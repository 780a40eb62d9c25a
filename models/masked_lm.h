// What the `mdlm` pipeline needs to know about a masked-diffusion language model beyond the
// Backbone interface: its vocabulary and the MASK token.
#pragma once
#include <cstdint>

namespace cachelab {

class MaskedLm {
 public:
  virtual ~MaskedLm() = default;
  virtual int64_t vocab_size() const = 0;  // real tokens are 0 .. vocab_size - 1; logits cover them
  virtual int64_t mask_id() const = 0;     // the MASK token (not a real token)
  virtual int64_t max_length() const = 0;  // longest sequence (prompt + generation) the model takes
  // Block-causal attention (Fast-dLLM v2's block diffusion): the prompt is block 0, then blocks
  // of block_size() positions from its end; a position sees the positions of its own and
  // earlier blocks only. 0 = bidirectional (LLaDA).
  virtual int64_t block_size() const { return 0; }
  // TiDAR's hybrid (llada's tidar): tokens causal with next-token outputs, MASK blocks of this
  // many positions drafting in parallel. 0 = not a TiDAR model.
  virtual int64_t tidar_block() const { return 0; }
  // A vision-language model (llada's vision_tokens): the sequence starts with this many visual
  // tokens whose inputs are Cond::embeddings [B, visual_tokens, visual_dim] (an image's
  // patches); 0 = a text-only model.
  virtual int64_t visual_tokens() const { return 0; }
  virtual int64_t visual_dim() const { return 0; }
  // Whether the model reads Cond::soft_tokens (mixed input embeddings at MASK positions).
  virtual bool soft_inputs() const { return false; }
};

}  // namespace cachelab
