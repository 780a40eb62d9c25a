// A small class-conditional U-Net (DDPM-style: GroupNorm + SiLU residual blocks with the
// time/class embedding added per channel, one self-attention at the deepest level).
//
// Levels l = 0..L-1 run at resolution input_size / 2^l with width channels * mult[l]. Each
// level runs its `res_blocks` down blocks, keeps the result as the level's skip, hands it to
// the deeper part (below the last level: mid = block, attention, block), concatenates the
// deeper part's answer with the skip and runs its `res_blocks` up blocks:
//
//   level(l, h) = up_l(cat(deep_l(down_l(h)), down_l(h)))
//   deep_l(s)   = upsample(level(l + 1, downsample(s)))    for l < L-1   <- site branches.l
//   deep_{L-1}  = mid
//
// Sites (tags, not names, are what policies read):
//   model (Model): input [B, C, H, W] -> prediction; own work: embeddings, conv_in,
//     conv_out (the level-0 blocks are child sites).
//   branches.l (Branch, block = l), l = 0..L-2: the deep branch below skip level l, the
//     part DeepCache reuses: input the level-l skip [B, ch_l, H_l, W_l], output the deep
//     features [B, ch_{l+1}, H_l, W_l] that are concatenated with that skip. Its own work is
//     the downsampling conv; everything deeper is in child sites. branches.l+1 nests in
//     branches.l, so reusing branches.0 skips all but the shallowest level.
//   down.l.i / up.l.i / mid.0 / mid.1 (Block, block = running index over all residual
//     blocks in forward order): one residual block, input and output the feature map.
//   mid.attn (Attn, block = the index of mid.0): the self-attention's branch before its
//     residual add, input the feature map [B, C, h, w].
// Every linear (time MLP, per-block embedding projections, attention qkv / proj) runs
// through the ops; the convolutions stay dense, their FLOPs are in the site table.
// No taps.
#pragma once
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "framework/backbone.h"

namespace cachelab {

struct UnetOptions {
  int input_size = 32;              // image side, pixels; divisible by 2^(levels-1)
  int in_channels = 1;
  int channels = 32;                // width of level 0
  std::vector<int> channel_mult = {1, 2, 2};  // width of level l = channels * channel_mult[l]
  int res_blocks = 1;               // residual blocks per level on each of the down and up paths
  int groups = 8;                   // GroupNorm groups (divides every width)
  int attention_heads = 4;          // heads of the mid self-attention (0 = no attention)
  int emb_dim = 128;                // time + class embedding width
  int num_classes = 10;
  double class_dropout_prob = 0.1;  // > 0 adds the null-class row used by guidance
  std::string weights;              // safetensors file (relative to the project root); "" = random init
  int64_t init_seed = 0;

  template <class V>
  void fields(V& v) {
    v("input_size", input_size, "image side in pixels (divisible by 2^(levels-1))");
    v("in_channels", in_channels, "image channels");
    v("channels", channels, "feature width of level 0");
    v("channel_mult", channel_mult, "width of level l = channels x channel_mult[l]; its length is the number of levels");
    v("res_blocks", res_blocks, "residual blocks per level on the down path and on the up path");
    v("groups", groups, "GroupNorm groups (must divide every width)");
    v("attention_heads", attention_heads, "heads of the self-attention at the deepest level (0 = none)");
    v("emb_dim", emb_dim, "width of the time + class embedding");
    v("num_classes", num_classes, "class labels (a null label is added for guidance)");
    v("class_dropout_prob", class_dropout_prob, "label dropout used in training; > 0 adds the null-label row");
    v("weights", weights, "safetensors weights (relative to the project root); empty = random init");
    v("init_seed", init_seed, "seed of the random initialisation");
  }
  template <class C>
  void check(C& c) const {
    c.require(in_channels >= 1, "in_channels", "must be >= 1");
    c.require(!channel_mult.empty() && channel_mult.size() <= 6, "channel_mult", "must have 1 to 6 entries");
    c.require(input_size >= 1 && input_size % (1 << (channel_mult.size() - 1)) == 0, "input_size",
              "must be divisible by 2^(levels-1)");
    bool widths_ok = channels >= 1 && groups >= 1;
    for (int m : channel_mult) widths_ok = widths_ok && m >= 1 && (channels * m) % std::max(groups, 1) == 0;
    c.require(widths_ok, "channel_mult", "every width channels x mult must be >= 1 and divisible by groups");
    c.require(res_blocks >= 1, "res_blocks", "must be >= 1");
    c.require(attention_heads >= 0 && (attention_heads == 0 || (channels * channel_mult.back()) % attention_heads == 0),
              "attention_heads", "must be 0 or divide the deepest width");
    c.require(emb_dim >= 2 && emb_dim % 2 == 0, "emb_dim", "must be an even number >= 2");
    c.require(num_classes >= 1, "num_classes", "must be >= 1");
    c.require(class_dropout_prob >= 0 && class_dropout_prob < 1, "class_dropout_prob", "must be in [0, 1)");
  }
};

class Unet final : public Backbone {
 public:
  static constexpr int kSiteModel = 0;

  explicit Unet(const UnetOptions& options);
  ~Unet() override;
  // cond.labels: [B] int64 class labels (num_classes = the null label).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) override;
  const std::vector<Site>& sites() const override { return sites_; }
  const std::vector<LinearRef>& linears() const override { return linears_; }
  std::vector<int64_t> sample_shape() const override;
  Cond null_cond(const Cond& cond) const override;
  int num_classes() const override { return options_.num_classes; }
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() override;
  std::vector<at::Tensor> trainable_parameters() override;
  void load(const std::string& path) override;
  void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) override;
  int64_t num_parameters() override;
  void to(at::Device device, at::ScalarType dtype) override;
  const UnetOptions& options() const { return options_; }
  int levels() const { return int(options_.channel_mult.size()); }
  // Site index of branches.l (l = 0..levels-2).
  int branch_site(int level) const { return branch_site_.at(size_t(level)); }

 private:
  struct Impl;
  struct ResIds {
    int site = 0, emb = 0;  // the block's site and its embedding projection (a linear)
    int module = 0;         // index into Impl::res
  };
  at::Tensor level(int l, const at::Tensor& h, const at::Tensor& emb, Hooks& hooks);
  at::Tensor res_block(const ResIds& r, const at::Tensor& h, const at::Tensor& emb_act, Hooks& hooks);
  std::unique_ptr<Impl> impl_;
  UnetOptions options_;
  std::vector<Site> sites_;
  std::vector<LinearRef> linears_;
  std::vector<std::vector<ResIds>> down_, up_;  // [level][i]
  std::vector<ResIds> mid_;                     // mid.0, mid.1
  std::vector<int> branch_site_;
  int mid_attn_site_ = -1, qkv_ = -1, proj_ = -1, t0_ = -1, t2_ = -1;
};

}  // namespace cachelab
