#include "models/inception.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

constexpr double kBnEps = 1e-3;

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// The rule of tools/fixtures/fid_inception.py: splitmix64 of fnv1a64(name) + (i + 1) * golden,
// top 24 bits as a uniform in [0, 1).
at::Tensor hashed(const std::string& name, const std::vector<int64_t>& shape) {
  auto t = at::empty(shape, at::kFloat);
  const int64_t n = t.numel();
  float* p = t.data_ptr<float>();
  const uint64_t seed = fnv1a64(name);
  const bool bn_w = name.size() > 10 && name.compare(name.size() - 10, 10, ".bn.weight") == 0;
  const bool bias = (name.size() > 8 && name.compare(name.size() - 8, 8, ".bn.bias") == 0) || name == "fc.bias";
  int64_t fan_in = 1;
  for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
  const double a = std::sqrt((name == "fc.weight" ? 3.0 : 6.0) / double(fan_in));
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = seed + uint64_t(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const double u = double(z >> 40) / double(1 << 24);
    p[i] = float(bn_w ? 0.5 + u : bias ? (2 * u - 1) * 0.1 : (2 * u - 1) * a);
  }
  return t;
}

}  // namespace

FidInception::FidInception() {
  // (name, in, out, kernel h, kernel w) of every conv + BatchNorm, as torchvision names them.
  auto basic = [&](const std::string& name, int64_t cin, int64_t cout, int64_t kh, int64_t kw) {
    shapes_[name + ".conv.weight"] = {cout, cin, kh, kw};
    for (const char* leaf : {".bn.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var"}) shapes_[name + leaf] = {cout};
  };
  basic("Conv2d_1a_3x3", 3, 32, 3, 3);
  basic("Conv2d_2a_3x3", 32, 32, 3, 3);
  basic("Conv2d_2b_3x3", 32, 64, 3, 3);
  basic("Conv2d_3b_1x1", 64, 80, 1, 1);
  basic("Conv2d_4a_3x3", 80, 192, 3, 3);
  auto a = [&](const std::string& p, int64_t cin, int64_t pool) {
    basic(p + ".branch1x1", cin, 64, 1, 1);
    basic(p + ".branch5x5_1", cin, 48, 1, 1);
    basic(p + ".branch5x5_2", 48, 64, 5, 5);
    basic(p + ".branch3x3dbl_1", cin, 64, 1, 1);
    basic(p + ".branch3x3dbl_2", 64, 96, 3, 3);
    basic(p + ".branch3x3dbl_3", 96, 96, 3, 3);
    basic(p + ".branch_pool", cin, pool, 1, 1);
  };
  a("Mixed_5b", 192, 32);
  a("Mixed_5c", 256, 64);
  a("Mixed_5d", 288, 64);
  basic("Mixed_6a.branch3x3", 288, 384, 3, 3);
  basic("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1);
  basic("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3);
  basic("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3);
  auto c = [&](const std::string& p, int64_t c7) {
    basic(p + ".branch1x1", 768, 192, 1, 1);
    basic(p + ".branch7x7_1", 768, c7, 1, 1);
    basic(p + ".branch7x7_2", c7, c7, 1, 7);
    basic(p + ".branch7x7_3", c7, 192, 7, 1);
    basic(p + ".branch7x7dbl_1", 768, c7, 1, 1);
    basic(p + ".branch7x7dbl_2", c7, c7, 7, 1);
    basic(p + ".branch7x7dbl_3", c7, c7, 1, 7);
    basic(p + ".branch7x7dbl_4", c7, c7, 7, 1);
    basic(p + ".branch7x7dbl_5", c7, 192, 1, 7);
    basic(p + ".branch_pool", 768, 192, 1, 1);
  };
  c("Mixed_6b", 128);
  c("Mixed_6c", 160);
  c("Mixed_6d", 160);
  c("Mixed_6e", 192);
  basic("Mixed_7a.branch3x3_1", 768, 192, 1, 1);
  basic("Mixed_7a.branch3x3_2", 192, 320, 3, 3);
  basic("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1);
  basic("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7);
  basic("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1);
  basic("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3);
  auto e = [&](const std::string& p, int64_t cin) {
    basic(p + ".branch1x1", cin, 320, 1, 1);
    basic(p + ".branch3x3_1", cin, 384, 1, 1);
    basic(p + ".branch3x3_2a", 384, 384, 1, 3);
    basic(p + ".branch3x3_2b", 384, 384, 3, 1);
    basic(p + ".branch3x3dbl_1", cin, 448, 1, 1);
    basic(p + ".branch3x3dbl_2", 448, 384, 3, 3);
    basic(p + ".branch3x3dbl_3a", 384, 384, 1, 3);
    basic(p + ".branch3x3dbl_3b", 384, 384, 3, 1);
    basic(p + ".branch_pool", cin, 192, 1, 1);
  };
  e("Mixed_7b", 1280);
  e("Mixed_7c", 2048);
  shapes_["fc.weight"] = {1008, 2048};
  shapes_["fc.bias"] = {1008};
  for (auto& [name, shape] : shapes_) weights_[name] = at::zeros(shape, at::kFloat);
}

void FidInception::load(const std::string& path) {
  std::vector<std::pair<std::string, at::Tensor>> dst(weights_.begin(), weights_.end());
  load_into(dst, path, "/usr/bin/python3 tools/convert_inception.py pt_inception-2015-12-05-6726825d.pth OUT.safetensors");
  folded_.clear();
}

void FidInception::init_hashed() {
  for (auto& [name, t] : weights_) {
    if (name.find("running_mean") != std::string::npos) t.zero_();
    else if (name.find("running_var") != std::string::npos) t.fill_(1.0);
    else t = hashed(name, shapes_.at(name));
  }
  folded_.clear();
}

void FidInception::set(const std::string& name, const at::Tensor& value) {
  auto it = weights_.find(name);
  CL_CHECK(it != weights_.end(), "FID Inception has no tensor `" << name << "`");
  CL_CHECK(value.sizes() == it->second.sizes(),
           "FID Inception tensor `" << name << "` has shape " << shape_str(it->second.sizes()) << ", given "
                                    << shape_str(value.sizes()));
  it->second = value.to(at::kFloat).contiguous();
  folded_.clear();
}

void FidInception::fold() const {
  for (auto& [name, w] : weights_) {
    const std::string suffix = ".conv.weight";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string p = name.substr(0, name.size() - suffix.size());
    auto scale = weights_.at(p + ".bn.weight") / at::sqrt(weights_.at(p + ".bn.running_var") + kBnEps);
    folded_[p] = {w * scale.view({-1, 1, 1, 1}), weights_.at(p + ".bn.bias") - weights_.at(p + ".bn.running_mean") * scale};
  }
}

at::Tensor FidInception::conv(const at::Tensor& x, const std::string& name, int64_t stride, int64_t ph, int64_t pw) const {
  const Folded& f = folded_.at(name);
  return at::relu(at::conv2d(x, f.weight, f.bias, {stride, stride}, {ph, pw}));
}

// TensorFlow's average pool leaves the padding out of the mean (count_include_pad false).
static at::Tensor tf_avg_pool(const at::Tensor& x) { return at::avg_pool2d(x, {3, 3}, {1, 1}, {1, 1}, false, false); }

at::Tensor FidInception::mixed_a(const at::Tensor& x, const std::string& p) const {
  auto b5 = conv(conv(x, p + ".branch5x5_1"), p + ".branch5x5_2", 1, 2, 2);
  auto b3 = conv(conv(conv(x, p + ".branch3x3dbl_1"), p + ".branch3x3dbl_2", 1, 1, 1), p + ".branch3x3dbl_3", 1, 1, 1);
  return at::cat({conv(x, p + ".branch1x1"), b5, b3, conv(tf_avg_pool(x), p + ".branch_pool")}, 1);
}

at::Tensor FidInception::mixed_b(const at::Tensor& x, const std::string& p) const {
  auto b3 = conv(x, p + ".branch3x3", 2);
  auto bd = conv(conv(conv(x, p + ".branch3x3dbl_1"), p + ".branch3x3dbl_2", 1, 1, 1), p + ".branch3x3dbl_3", 2);
  return at::cat({b3, bd, at::max_pool2d(x, {3, 3}, {2, 2})}, 1);
}

at::Tensor FidInception::mixed_c(const at::Tensor& x, const std::string& p) const {
  auto b7 = conv(conv(conv(x, p + ".branch7x7_1"), p + ".branch7x7_2", 1, 0, 3), p + ".branch7x7_3", 1, 3, 0);
  auto bd = conv(x, p + ".branch7x7dbl_1");
  bd = conv(bd, p + ".branch7x7dbl_2", 1, 3, 0);
  bd = conv(bd, p + ".branch7x7dbl_3", 1, 0, 3);
  bd = conv(bd, p + ".branch7x7dbl_4", 1, 3, 0);
  bd = conv(bd, p + ".branch7x7dbl_5", 1, 0, 3);
  return at::cat({conv(x, p + ".branch1x1"), b7, bd, conv(tf_avg_pool(x), p + ".branch_pool")}, 1);
}

at::Tensor FidInception::mixed_d(const at::Tensor& x, const std::string& p) const {
  auto b3 = conv(conv(x, p + ".branch3x3_1"), p + ".branch3x3_2", 2);
  auto b7 = conv(x, p + ".branch7x7x3_1");
  b7 = conv(b7, p + ".branch7x7x3_2", 1, 0, 3);
  b7 = conv(b7, p + ".branch7x7x3_3", 1, 3, 0);
  b7 = conv(b7, p + ".branch7x7x3_4", 2);
  return at::cat({b3, b7, at::max_pool2d(x, {3, 3}, {2, 2})}, 1);
}

// Mixed_7b pools by TensorFlow's average, Mixed_7c by a max pool (as the FID graph does).
at::Tensor FidInception::mixed_e(const at::Tensor& x, const std::string& p, bool max_pool) const {
  auto b3 = conv(x, p + ".branch3x3_1");
  b3 = at::cat({conv(b3, p + ".branch3x3_2a", 1, 0, 1), conv(b3, p + ".branch3x3_2b", 1, 1, 0)}, 1);
  auto bd = conv(conv(x, p + ".branch3x3dbl_1"), p + ".branch3x3dbl_2", 1, 1, 1);
  bd = at::cat({conv(bd, p + ".branch3x3dbl_3a", 1, 0, 1), conv(bd, p + ".branch3x3dbl_3b", 1, 1, 0)}, 1);
  auto pooled = max_pool ? at::max_pool2d(x, {3, 3}, {1, 1}, {1, 1}) : tf_avg_pool(x);
  return at::cat({conv(x, p + ".branch1x1"), b3, bd, conv(pooled, p + ".branch_pool")}, 1);
}

InceptionOutputs FidInception::forward(const at::Tensor& images) const {
  CL_CHECK(images.dim() == 4 && images.size(1) == 3,
           "FID Inception takes images [B, 3, H, W] in [0, 1]; got " << shape_str(images.sizes()));
  if (folded_.empty()) fold();
  auto x = at::upsample_bilinear2d(images.to(at::kFloat), {299, 299}, false) * 2 - 1;
  InceptionOutputs out;
  x = conv(x, "Conv2d_1a_3x3", 2);
  x = conv(x, "Conv2d_2a_3x3");
  x = conv(x, "Conv2d_2b_3x3", 1, 1, 1);
  x = at::max_pool2d(x, {3, 3}, {2, 2});
  out.block_means.push_back(x.mean({2, 3}));
  x = conv(x, "Conv2d_3b_1x1");
  x = conv(x, "Conv2d_4a_3x3");
  x = at::max_pool2d(x, {3, 3}, {2, 2});
  out.block_means.push_back(x.mean({2, 3}));
  for (const char* p : {"Mixed_5b", "Mixed_5c", "Mixed_5d"}) x = mixed_a(x, p);
  x = mixed_b(x, "Mixed_6a");
  for (const char* p : {"Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"}) x = mixed_c(x, p);
  out.block_means.push_back(x.mean({2, 3}));
  x = mixed_d(x, "Mixed_7a");
  x = mixed_e(x, "Mixed_7b", false);
  x = mixed_e(x, "Mixed_7c", true);
  out.pool = x.mean({2, 3});
  out.logits = at::linear(out.pool, weights_.at("fc.weight"), weights_.at("fc.bias"));
  return out;
}

at::Tensor FidInception::from_uint8_nhwc(const at::Tensor& images) {
  CL_CHECK(images.dim() == 4 && images.size(3) == 3 && images.scalar_type() == at::kByte,
           "expected uint8 images [B, H, W, 3]; got " << shape_str(images.sizes()));
  return images.permute({0, 3, 1, 2}).to(at::kFloat).div(255.0);
}

InceptionJudge::InceptionJudge(const InceptionJudgeOptions& o) : o_(o) {
  const std::string path = resolve_path(o.weights);
  net_.load(path);
  digest_ = file_digest(path);
}

InceptionOutputs InceptionJudge::score_uint8(const at::Tensor& images) const {
  std::vector<at::Tensor> pools, logits;
  for (int64_t s = 0; s < images.size(0); s += o_.batch) {
    auto out = net_.forward(FidInception::from_uint8_nhwc(images.narrow(0, s, std::min<int64_t>(o_.batch, images.size(0) - s))));
    pools.push_back(out.pool);
    logits.push_back(out.logits);
  }
  InceptionOutputs out;
  out.pool = at::cat(pools);
  out.logits = at::cat(logits);
  return out;
}

const InceptionOutputs& InceptionJudge::run(const at::Tensor& images) {
  if (last_in_.defined() && last_in_.is_same(images)) return last_out_;
  CL_CHECK(images.dim() == 4 && images.size(1) == 3,
           "the inception judge scores RGB images [N, 3, H, W]; the samples are " << shape_str(images.sizes())
                                                                                 << " (latents? add a `decoder:`)");
  // As sample.py saves them: clamp(127.5 x + 128, 0, 255) truncated to uint8, NHWC.
  auto u = (images.to(at::kFloat) * 127.5 + 128).clamp(0, 255).to(at::kByte).permute({0, 2, 3, 1}).contiguous();
  last_out_ = score_uint8(u);
  last_in_ = images;
  return last_out_;
}

at::Tensor InceptionJudge::features(const at::Tensor& images) { return run(images).pool; }
at::Tensor InceptionJudge::logits(const at::Tensor& images) { return run(images).logits; }

std::vector<double> InceptionJudge::class_accuracy(const at::Tensor&, const at::Tensor&) {
  CL_FAIL("the inception judge has no classes of the samples' labels (its 1008 outputs are TensorFlow's ImageNet "
          "graph's): use it for fid_ref and sample_quality, not accuracy");
}

}  // namespace cachelab
