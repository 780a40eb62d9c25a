// Small random llada models and run settings shared by the masked-LM suites (block diffusion,
// WeDLM, TiDAR, iteration smoothing).
#pragma once
#include "framework/run_options.h"
#include "models/llada.h"

namespace cachelab::testing {

// d_model 32, 2 layers of 4 heads, SwiGLU 64, vocabulary 40 with MASK 39, random weights.
inline LladaOptions small_llada(int64_t init_seed, int max_length = 32) {
  LladaOptions o;
  o.d_model = 32;
  o.n_layers = 2;
  o.n_heads = 4;
  o.mlp_hidden_size = 64;
  o.vocab_size = 40;
  o.mask_token_id = 39;
  o.max_sequence_length = max_length;
  o.init_seed = init_seed;
  return o;
}

// Three samples in one batch, no guidance, every sample probed.
inline RunOptions three_samples() {
  RunOptions r;
  r.samples = 3;
  r.batch = 3;
  r.cfg_scale = 1;
  r.probe_samples = 3;
  return r;
}

}  // namespace cachelab::testing
