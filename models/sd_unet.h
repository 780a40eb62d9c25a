// The conditional U-Net of Stable Diffusion 1.x (CompVis ldm `UNetModel` with
// `use_spatial_transformer`, SD 1.5: model_channels 320, channel_mult 1,2,4,4, 2 residual
// blocks per level, spatial transformers at downsampling factors 1, 2, 4, 8 heads, context
// 768), computed as the reference: an epsilon prediction from latents [B, 4, h, w], model
// timesteps [B] and a text context [B, L, 768] (Cond::embeddings; masks are ignored, as SD 1.x
// attends to all 77 tokens).
//
// Layout (CompVis names, the internal naming): time_embed.{0,2} (a 2-layer MLP over the
// sinusoidal features of width model_channels); input_blocks.0.0 = conv_in; input_blocks.n =
// a residual block (n.0: in_layers.{0,2}, emb_layers.1, out_layers.{0,3}, skip_connection when
// the width changes) with a spatial transformer (n.1: norm, proj_in, transformer_blocks.k.
// {norm1, attn1, norm2, attn2, norm3, ff.net.0.proj, ff.net.2}, proj_out) at attention
// resolutions, or a stride-2 conv (n.0.op) between levels; middle_block.{0,1,2} = residual
// block, transformer, residual block; output_blocks.n = a residual block over the
// concatenation [h, skip], a transformer at attention resolutions and, at the end of a level
// above the lowest, a nearest 2x upsample + conv (n.1.conv or n.2.conv); out.{0,2} = GroupNorm,
// SiLU, conv. GroupNorm(32): eps 1e-5 in the residual blocks and out (computed in float32),
// 1e-6 in the transformers; LayerNorm eps 1e-5; GEGLU with the exact GELU.
//
// Weights load from (detected by name; tensors of other components in the file are ignored):
//   CompVis: model.diffusion_model.<name> (v1-5-pruned-emaonly.safetensors) or bare <name>
//   diffusers: unet/diffusion_pytorch_model.safetensors (time_embedding.linear_{1,2}, conv_in,
//     down_blocks.i.{resnets,attentions}.j, down_blocks.i.downsamplers.0.conv, mid_block,
//     up_blocks.i.{resnets,attentions}.j, up_blocks.i.upsamplers.0.conv, conv_norm_out,
//     conv_out; resnets: norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut)
// A missing tensor or a shape mismatch is an error naming the first one.
//
// Skips: with N input blocks, hs[n] is the output of input_blocks.n (hs[0] = conv_in), and
// output_blocks.(N-1-n) concatenates hs[n]. The part of the network between hs[n] and that
// concatenation is a function of hs[n] alone:
//   branch(n, s) = output_blocks.(N-2-n)(cat(deep, hs[n+1])), hs[n+1] = input_blocks.(n+1)(s),
//   deep = branch(n+1, hs[n+1]) for n+1 < N-1, else middle_block(hs[N-1]).
//
// Sites (policies read kinds and tags):
//   model (Model): latents -> epsilon; own work: time MLP, conv_in, output_blocks.(N-1)'s
//     concatenation, out.
//   branches.n (Branch, block = n), n = 0..N-2: branch(n, .) above, input hs[n] [B, C_n, h_n,
//     w_n], output the features concatenated with hs[n]. DeepCache's cut: branches.n+1 nests
//     in branches.n; own work: the stride-2 conv when input_blocks.(n+1) is a downsample.
//     DeepCache's SD setting (skip after the first residual + transformer block) is branch 1.
//   input_blocks.n (n >= 1, not a downsample), middle_block, output_blocks.n (Block, block =
//     running index in forward order): one entry of the reference's block lists, input and
//     output feature maps (output blocks: input the concatenation); own work: residual
//     block(s) and the upsample conv.
//   <block>.1 (middle_block.1) (Attn, block = its Block's index): the spatial transformer's
//     branch (proj_out's output, before the residual add), input the feature map.
// Every linear (time MLP, residual-block embedding projections, to_q / to_k / to_v / to_out.0,
// ff.net.0.proj, ff.net.2) runs through the ops, in that order of the linear table; the
// convolutions stay dense. Attention calls carry layer = running index of the attention
// (self and cross each count); a call whose score matrix would exceed 2^28 elements is made
// as several calls over chunks of the queries (e.g. self-attention at 64x64 latents, batch > 2).
// No taps.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "framework/backbone.h"

namespace cachelab {

struct SdUnetOptions {
  int input_size = 64;  // latent side (SD 1.5 at 512 x 512 pixels: 64)
  int in_channels = 4;
  int out_channels = 4;
  int model_channels = 320;
  std::vector<int> channel_mult = {1, 2, 4, 4};
  int num_res_blocks = 2;
  std::vector<int> attention_resolutions = {4, 2, 1};  // downsampling factors with a transformer
  int num_heads = 8;           // heads per transformer (when num_head_channels = -1)
  int num_head_channels = -1;  // > 0: heads = width / num_head_channels (SD 2.x style)
  int transformer_depth = 1;
  int context_dim = 768;
  int context_length = 77;     // tokens of the text context (FLOP counts, the zero context)
  std::string null_context;    // "" | "zeros" | safetensors file holding `context` [L, E] or [1, L, E]
  std::string weights;         // safetensors (CompVis or diffusers names); "" = random init
  int64_t init_seed = 0;

  template <class V>
  void fields(V& v) {
    v("input_size", input_size, "latent side in latent pixels (SD 1.5 at 512 px: 64)");
    v("in_channels", in_channels, "latent channels in");
    v("out_channels", out_channels, "channels out (epsilon)");
    v("model_channels", model_channels, "width of the first level");
    v("channel_mult", channel_mult, "width of level l = model_channels x channel_mult[l]");
    v("num_res_blocks", num_res_blocks, "residual blocks per level (the output path has one more)");
    v("attention_resolutions", attention_resolutions, "downsampling factors (1, 2, 4, ...) whose blocks have a transformer");
    v("num_heads", num_heads, "attention heads per transformer (used when num_head_channels is -1)");
    v("num_head_channels", num_head_channels, "-1, or channels per head (heads = width / num_head_channels)");
    v("transformer_depth", transformer_depth, "transformer blocks per spatial transformer");
    v("context_dim", context_dim, "width of the text context (CLIP ViT-L/14: 768)");
    v("context_length", context_length, "tokens of the text context (77); FLOP counts and the zero context");
    v("null_context", null_context,
      "unconditional context for guidance and for conditions without embeddings: empty (none: an error), "
      "`zeros`, or a safetensors file with tensor `context` [L, E] (the text encoder's output for \"\")");
    v("weights", weights, "safetensors weights (CompVis or diffusers names; relative to the project root); empty = random");
    v("init_seed", init_seed, "seed of the random initialisation");
  }
  template <class C>
  void check(C& c) const {
    c.require(in_channels >= 1 && out_channels >= 1, "in_channels", "in_channels and out_channels must be >= 1");
    c.require(model_channels >= 32 && model_channels % 32 == 0, "model_channels", "must be a positive multiple of 32 (GroupNorm(32))");
    bool mult_ok = !channel_mult.empty() && channel_mult.size() <= 6;
    for (int m : channel_mult) mult_ok = mult_ok && m >= 1;
    c.require(mult_ok, "channel_mult", "must have 1 to 6 entries, each >= 1");
    c.require(input_size >= 1 && !channel_mult.empty() && input_size % (1 << (channel_mult.size() - 1)) == 0, "input_size",
              "must be divisible by 2^(levels-1)");
    c.require(num_res_blocks >= 1, "num_res_blocks", "must be >= 1");
    c.require(num_heads >= 1 || num_head_channels >= 1, "num_heads", "num_heads or num_head_channels must be >= 1");
    c.require(transformer_depth >= 1, "transformer_depth", "must be >= 1");
    c.require(context_dim >= 1 && context_length >= 1, "context_dim", "context_dim and context_length must be >= 1");
  }
};

class SdUnet final : public Backbone {
 public:
  static constexpr int kSiteModel = 0;

  explicit SdUnet(const SdUnetOptions& options);
  ~SdUnet() override;
  // cond.embeddings: [B, L, context_dim] text context (or the null context when undefined);
  // masks are ignored. null_cond: cond.negative_embeddings when defined, else the null context.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) override;
  const std::vector<Site>& sites() const override { return sites_; }
  const std::vector<LinearRef>& linears() const override { return linears_; }
  std::vector<int64_t> sample_shape() const override;
  Cond null_cond(const Cond& cond) const override;
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() override;
  std::vector<at::Tensor> trainable_parameters() override;
  // Reads CompVis or diffusers names (see above); returns nothing, throws naming the first
  // missing tensor or mismatched shape.
  void load(const std::string& path) override;
  void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) override;
  int64_t num_parameters() override;
  void to(at::Device device, at::ScalarType dtype) override;
  const SdUnetOptions& options() const { return options_; }
  // Input blocks N (hs has N entries) and the site index of branches.n (n = 0..N-2).
  int num_skips() const { return int(input_.size()); }
  int branch_site(int n) const { return branch_site_.at(size_t(n)); }
  // The expected tensors by CompVis name (without a prefix) and their shapes.
  std::map<std::string, std::vector<int64_t>> expected_shapes() const;

 private:
  struct Res {
    std::string prefix;  // e.g. "input_blocks.1.0"
    int emb = -1;        // linear id of emb_layers.1
    bool skip = false;
  };
  struct XfBlock {
    int q1, k1, v1, o1, q2, k2, v2, o2, ff_in, ff_out;
  };
  struct Xf {
    std::string prefix;  // e.g. "input_blocks.1.1"
    int site = -1, heads = 1, attn_layer = 0;
    std::vector<XfBlock> blocks;
  };
  struct Layer {              // one entry of input_blocks / output_blocks (or the middle block)
    std::string prefix;
    int site = -1;            // its Block site (-1: a downsample, owned by the enclosing branch)
    bool down = false, up = false;
    std::vector<Res> res;     // 1 (2 in the middle block)
    std::vector<Xf> xf;       // 0 or 1
    std::string up_conv;      // prefix of the upsample conv
  };
  void add_tensor(const std::string& name, std::vector<int64_t> shape);
  const at::Tensor& w(const std::string& name) const;
  at::Tensor res_block(const Res& r, const at::Tensor& x, const at::Tensor& emb_act, Hooks& hooks) const;
  at::Tensor transformer(const Xf& a, const at::Tensor& x, const at::Tensor& ctx, Hooks& hooks) const;
  at::Tensor layer(const Layer& l, const at::Tensor& h, const at::Tensor& emb_act, const at::Tensor& ctx,
                   Hooks& hooks) const;
  at::Tensor branch(int n, const at::Tensor& s, const at::Tensor& emb_act, const at::Tensor& ctx, Hooks& hooks) const;
  at::Tensor null_context(int64_t batch, const at::TensorOptions& options) const;

  SdUnetOptions options_;
  std::vector<std::pair<std::string, at::Tensor>> tensors_;  // CompVis names, creation order
  std::map<std::string, size_t> index_;                      // name -> position in tensors_
  std::vector<Site> sites_;
  std::vector<LinearRef> linears_;
  std::vector<Layer> input_, output_;  // input_[0] is conv_in
  Layer middle_;
  std::vector<int> branch_site_;
  std::vector<bool> down_level_;       // per level: has a transformer
  int t0_ = -1, t2_ = -1;
  at::Tensor null_context_;            // [1, L, E] from the null_context file, or undefined
};

}  // namespace cachelab
