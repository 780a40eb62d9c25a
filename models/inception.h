// The FID InceptionV3 of pytorch-fid (Seitzer, github.com/mseitzer/pytorch-fid), the network
// behind the FID numbers of the PyTorch literature: torchvision's InceptionV3 with the blocks
// of TensorFlow's 2015 FID graph (average pools that ignore padding in Mixed_5b-d, 6b-e and
// 7b, a max pool in 7c) and its 1008-class head. Computed as the reference does:
//   images in [0, 1] -> bilinear resize to 299 x 299 (align_corners false) -> 2 x - 1 ->
//   Conv2d_1a..2b, max pool, Conv2d_3b..4a, max pool, Mixed_5b..7c -> global average pool
//   (the 2048-d features of FID and precision / recall) -> fc (1008 logits, Inception Score).
// Every convolution is conv (no bias) + BatchNorm (eps 1e-3) + ReLU, as torchvision's
// BasicConv2d; BatchNorm is folded into the convolution on first use.
//
// Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, converted once with
// tools/convert_inception.py (LibTorch cannot read the pickle); names as its state dict
// (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.running_mean, ..., fc.weight).
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "framework/metric.h"

namespace cachelab {

struct InceptionOutputs {
  at::Tensor pool;     // [B, 2048] the final average pool
  at::Tensor logits;   // [B, 1008]
  std::vector<at::Tensor> block_means;  // per-image channel means of blocks 0, 1, 2 (64, 192, 768)
};

class FidInception {
 public:
  FidInception();
  // Every tensor of the architecture must be in the file with its shape (num_batches_tracked
  // is ignored); the error names the first that is missing, misshaped or unknown.
  void load(const std::string& path);
  // Deterministic pseudo-random weights (a hash of name and index; BatchNorm statistics 0 / 1),
  // the rule tools/fixtures/fid_inception.py applies to the reference: for tests only.
  void init_hashed();
  void set(const std::string& name, const at::Tensor& value);  // one tensor, shape-checked
  // images [B, 3, H, W] float in [0, 1] (any H, W: resized to 299).
  InceptionOutputs forward(const at::Tensor& images) const;
  // uint8 [B, H, W, 3] (a sample .npz's layout) -> [B, 3, H, W] float in [0, 1].
  static at::Tensor from_uint8_nhwc(const at::Tensor& images);
  const std::map<std::string, std::vector<int64_t>>& expected_shapes() const { return shapes_; }

 private:
  struct Folded {
    at::Tensor weight, bias;
  };
  at::Tensor conv(const at::Tensor& x, const std::string& name, int64_t stride = 1, int64_t ph = 0, int64_t pw = 0) const;
  at::Tensor mixed_a(const at::Tensor& x, const std::string& p) const;
  at::Tensor mixed_b(const at::Tensor& x, const std::string& p) const;
  at::Tensor mixed_c(const at::Tensor& x, const std::string& p) const;
  at::Tensor mixed_d(const at::Tensor& x, const std::string& p) const;
  at::Tensor mixed_e(const at::Tensor& x, const std::string& p, bool max_pool) const;
  void fold() const;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::map<std::string, at::Tensor> weights_;
  mutable std::map<std::string, Folded> folded_;  // conv name -> BatchNorm folded in
};

// The judge `inception`: FID features and Inception logits of samples as the papers score
// them. Samples in [-1, 1] are first made the uint8 images DiT's sample.py saves
// (clamp(127.5 x + 128) truncated), then read back as pytorch-fid reads them (/ 255).
struct InceptionJudgeOptions {
  std::string weights;  // converted pytorch-fid weights (tools/convert_inception.py)
  int batch = 50;       // images per forward
  template <class V>
  void fields(V& v) {
    v("weights", weights, "pytorch-fid's InceptionV3 as safetensors (tools/convert_inception.py), relative to the project root");
    v("batch", batch, "images per Inception forward");
  }
  template <class C>
  void check(C& c) const {
    c.require(!weights.empty(), "weights",
              "is required: pytorch-fid's pt_inception-2015-12-05-6726825d.pth converted with tools/convert_inception.py");
    c.require(batch >= 1, "batch", "must be >= 1");
  }
};

class InceptionJudge final : public Evaluator {
 public:
  explicit InceptionJudge(const InceptionJudgeOptions& o);
  at::Tensor features(const at::Tensor& images) override;  // [N, 2048] pool features
  at::Tensor logits(const at::Tensor& images) override;    // [N, 1008]
  std::vector<double> class_accuracy(const at::Tensor& images, const at::Tensor& labels) override;  // throws
  std::string identity() const override { return digest_; }
  // uint8 [N, H, W, 3] images (an .npz's) -> both outputs, in batches.
  InceptionOutputs score_uint8(const at::Tensor& images) const;

 private:
  const InceptionOutputs& run(const at::Tensor& images);
  InceptionJudgeOptions o_;
  FidInception net_;
  std::string digest_;
  at::Tensor last_in_;  // the images of the last run() (the same tensor asked for features, then logits)
  InceptionOutputs last_out_;
};

}  // namespace cachelab
