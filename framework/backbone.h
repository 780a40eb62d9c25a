// The denoiser interface every backbone implements (images, token sequences, video
// chunks). Torch-free: models own their modules; the framework sees tensors, sites, taps
// and linear layers.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "framework/ops.h"
#include "framework/site.h"

namespace cachelab {

// Conditioning of a batch. A backbone reads what it understands and documents it.
struct Cond {
  at::Tensor labels;      // [B] int64 class labels (a VLM task: the number its image shows); the null label is Backbone::null_label()
  at::Tensor tokens;      // [B, L] int64 token ids (a prompt), or undefined
  at::Tensor embeddings;  // [B, L, E] float32 (a text encoder's output; a VLM's image patches), or undefined
  at::Tensor embeddings_mask;  // [B, L] (1 = real token, 0 = padding) of `embeddings`, or undefined = all real
  // A negative prompt's embeddings and mask (same layout): the unconditional half of
  // classifier-free guidance when defined (Backbone::null_cond), else the model's own null.
  at::Tensor negative_embeddings, negative_mask;
  int64_t chunk = 0;      // AR video: index of the chunk being generated
  // AR video: [B, F, C, H, W] the data set's videos (ground truth) whose first frames the
  // rollout is conditioned on (the pipeline's cond_frames), or undefined (unconditional).
  at::Tensor frames;
  // Sequence models (masked LM, AR video): leading positions of x that are finished context
  // (prompt and decoded blocks; frames of past chunks). The model predicts only the positions
  // after them, and a K/V cache (Ops::seq_begin) may keep their keys and values.
  int64_t context = 0;
  int64_t block_end = -1;  // masked LMs: outputs cover positions [context, block_end); -1 = to the end
  at::Tensor token_state;  // masked LMs: [B, L] int32 token states (framework/ops.h), or undefined
  at::Tensor confidence;   // masked LMs: [B, L] float, the decoder's last confidences (SeqForward), or undefined
  at::Tensor positions;    // sequence models: [B, L] int64 each token's position (RoPE), or undefined = 0 .. L - 1
  // Masked LMs that take soft inputs (MaskedLm::soft_inputs): [B, L, V] float weights over the
  // vocabulary at MASK positions; such a position's input embedding becomes (1 - sum_v w_v) x
  // MASK's + sum_v w_v x token v's (dInfer's iteration smoothing). Undefined = plain MASK.
  at::Tensor soft_tokens;
  int step = 0;            // the run's step (StepIndex::i) this forward belongs to
  Cond narrow(int64_t start, int64_t length) const;   // rows [start, start + length) of the batch
  static Cond cat(const Cond& a, const Cond& b);      // along the batch
};

class Backbone {
 public:
  virtual ~Backbone() = default;
  // x: the noisy sample (images [B, C, H, W]; token ids [B, L] int64 for a masked LM;
  // frames [B, F, C, H, W] for video); t: [B] float32 model timesteps. Returns the
  // prediction (epsilon / v / velocity in the first C channels for images, logits
  // [B, L, V] for a masked LM).
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) = 0;
  virtual const std::vector<Site>& sites() const = 0;
  virtual const std::vector<Tap>& taps() const;  // none by default
  // The attention of a sequence model (framework/site.h); None for images.
  virtual SequenceKind sequence_kind() const { return SequenceKind::None; }
  // Every linear layer, by checkpoint name; the model calls hooks.ops().linear(id, x).
  virtual const std::vector<LinearRef>& linears() const = 0;
  virtual std::vector<int64_t> sample_shape() const = 0;  // one sample, without the batch
  // The unconditional counterpart of `cond` for classifier-free guidance; throws a clear
  // error when the model has none.
  virtual Cond null_cond(const Cond& cond) const;
  virtual int num_classes() const { return 0; }
  virtual bool learns_sigma() const { return false; }
  // Parameters and buffers by their checkpoint names (shared storage, not copies).
  virtual std::vector<std::pair<std::string, at::Tensor>> named_tensors() = 0;
  virtual std::vector<at::Tensor> trainable_parameters() = 0;
  virtual void load(const std::string& path) = 0;
  virtual void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata = {}) = 0;
  virtual int64_t num_parameters() = 0;
  // A batch of model input for untimed warm-up passes (zeros of sample_shape by default).
  virtual at::Tensor example_input(int64_t batch, const at::TensorOptions& options) const;
  // Moves parameters to a device / dtype (`cpu`, `cuda`; float32, bfloat16, float16).
  virtual void to(at::Device device, at::ScalarType dtype) = 0;
};

}  // namespace cachelab
