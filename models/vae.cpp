#include "models/vae.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <regex>
#include <set>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

// A diffusers name -> its CompVis name ("" = not a decoder tensor). `levels`: resolutions.
std::string compvis_name(const std::string& name, int levels) {
  static const std::regex up(R"(decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*))");
  static const std::regex mid_res(R"(decoder\.mid_block\.resnets\.(\d+)\.(.*))");
  static const std::regex mid_attn(R"(decoder\.mid_block\.attentions\.0\.(\w+)(\.0)?\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(name, m, up)) {
    const int level = levels - 1 - std::stoi(m[1]);
    if (m[2] == "upsamplers") return "decoder.up." + std::to_string(level) + ".upsample." + std::string(m[4]);
    std::string leaf = m[4];
    if (leaf.rfind("conv_shortcut.", 0) == 0) leaf = "nin_shortcut." + leaf.substr(14);
    return "decoder.up." + std::to_string(level) + ".block." + std::string(m[3]) + "." + leaf;
  }
  if (std::regex_match(name, m, mid_res)) return "decoder.mid.block_" + std::to_string(std::stoi(m[1]) + 1) + "." + std::string(m[2]);
  if (std::regex_match(name, m, mid_attn)) {
    static const std::map<std::string, std::string> leaf = {
        {"group_norm", "norm"}, {"to_q", "q"}, {"to_k", "k"}, {"to_v", "v"}, {"to_out", "proj_out"},
        {"query", "q"},        {"key", "k"},  {"value", "v"}, {"proj_attn", "proj_out"}};
    auto it = leaf.find(m[1]);
    return it == leaf.end() ? name : "decoder.mid.attn_1." + it->second + "." + std::string(m[3]);
  }
  if (name.rfind("decoder.conv_norm_out.", 0) == 0) return "decoder.norm_out." + name.substr(22);
  return name;
}

at::Tensor swish(const at::Tensor& x) { return x * at::sigmoid(x); }  // as ldm's nonlinearity

}  // namespace

SdVaeOptions sd_vae_options_of(const SafetensorsFile& f, const std::string& path) {
  static const std::regex level_re(R"((?:first_stage_model\.)?decoder\.(up|up_blocks)\.(\d+)\.(block|resnets)\.(\d+)\.conv1\.weight)");
  std::map<int, int64_t> width;  // CompVis level -> output width of its first resnet
  std::map<int, int> blocks;     // CompVis level -> resnets
  bool diffusers = false;
  std::map<std::string, at::Tensor> by_name;
  for (auto& [name, t] : f.tensors) {
    std::string n = name.rfind("first_stage_model.", 0) == 0 ? name.substr(18) : name;
    by_name[n] = t;
    std::smatch m;
    if (!std::regex_match(name, m, level_re)) continue;
    diffusers |= m[1] == "up_blocks";
    const int level = std::stoi(m[2]), j = std::stoi(m[4]);
    blocks[level] = std::max(blocks[level], j + 1);
    if (j == 0) width[level] = t.size(0);
  }
  CL_CHECK(!width.empty() && by_name.count("decoder.conv_out.weight") && by_name.count("post_quant_conv.weight"),
           "`" << path << "` holds no SD VAE decoder (no decoder.up / up_blocks resnets, conv_out, post_quant_conv)");
  SdVaeOptions o;
  const int levels = int(width.size());
  o.ch_mult.assign(size_t(levels), 1);
  const int64_t top = width[diffusers ? levels - 1 : 0];
  o.ch = int(top);
  for (auto& [level, w] : width) {
    const int compvis = diffusers ? levels - 1 - level : level;
    CL_CHECK(w % top == 0, "`" << path << "`: decoder width " << w << " is not a multiple of the top width " << top);
    o.ch_mult[size_t(compvis)] = int(w / top);
  }
  o.num_res_blocks = blocks.begin()->second - 1;
  o.z_channels = int(by_name["post_quant_conv.weight"].size(0));
  o.out_channels = int(by_name["decoder.conv_out.weight"].size(0));
  return o;
}

SdVaeDecoder::SdVaeDecoder(const SdVaeOptions& o) : o_(o) {
  CL_CHECK(!o.ch_mult.empty() && o.ch > 0 && o.ch % 32 == 0 && o.num_res_blocks >= 0,
           "sd_vae: ch must be a positive multiple of 32 (GroupNorm(32)) and ch_mult non-empty");
}

std::map<std::string, std::vector<int64_t>> SdVaeDecoder::expected_shapes() const {
  std::map<std::string, std::vector<int64_t>> s;
  auto conv = [&](const std::string& p, int64_t out, int64_t in, int64_t k) {
    s[p + ".weight"] = {out, in, k, k};
    s[p + ".bias"] = {out};
  };
  auto norm = [&](const std::string& p, int64_t c) { s[p + ".weight"] = s[p + ".bias"] = {c}; };
  auto resnet = [&](const std::string& p, int64_t in, int64_t out) {
    norm(p + ".norm1", in);
    conv(p + ".conv1", out, in, 3);
    norm(p + ".norm2", out);
    conv(p + ".conv2", out, out, 3);
    if (in != out) conv(p + ".nin_shortcut", out, in, 1);
  };
  const int n = int(o_.ch_mult.size());
  int64_t block_in = int64_t(o_.ch) * o_.ch_mult.back();
  conv("post_quant_conv", o_.z_channels, o_.z_channels, 1);
  conv("decoder.conv_in", block_in, o_.z_channels, 3);
  resnet("decoder.mid.block_1", block_in, block_in);
  norm("decoder.mid.attn_1.norm", block_in);
  for (const char* p : {"q", "k", "v", "proj_out"}) conv(std::string("decoder.mid.attn_1.") + p, block_in, block_in, 1);
  resnet("decoder.mid.block_2", block_in, block_in);
  for (int level = n - 1; level >= 0; --level) {
    const int64_t block_out = int64_t(o_.ch) * o_.ch_mult[size_t(level)];
    for (int j = 0; j <= o_.num_res_blocks; ++j) {
      resnet("decoder.up." + std::to_string(level) + ".block." + std::to_string(j), block_in, block_out);
      block_in = block_out;
    }
    if (level != 0) conv("decoder.up." + std::to_string(level) + ".upsample.conv", block_in, block_in, 3);
  }
  norm("decoder.norm_out", block_in);
  conv("decoder.conv_out", o_.out_channels, block_in, 3);
  return s;
}

std::string SdVaeDecoder::load(const std::string& path) { return load(read_safetensors(path), path); }

std::string SdVaeDecoder::load(const SafetensorsFile& f, const std::string& path) {
  bool diffusers = false, legacy = false;
  for (auto& [name, t] : f.tensors) {
    diffusers |= name.find("up_blocks.") != std::string::npos;
    legacy |= name.find("attentions.0.query.") != std::string::npos;
  }
  const std::string layout = legacy ? "diffusers-legacy-attention" : diffusers ? "diffusers" : "compvis";
  const auto want = expected_shapes();
  const int levels = int(o_.ch_mult.size());
  weights_.clear();
  for (auto& [stored, t] : f.tensors) {
    std::string name = stored.rfind("first_stage_model.", 0) == 0 ? stored.substr(18) : stored;
    if (name.rfind("encoder.", 0) == 0 || name.rfind("quant_conv.", 0) == 0) continue;  // the encoder half
    name = compvis_name(name, levels);
    auto it = want.find(name);
    CL_CHECK(it != want.end(), "VAE weights `" << path << "`: tensor `" << stored << "` is not part of a decoder with ch "
                                                << o_.ch << ", " << o_.ch_mult.size() << " resolutions, "
                                                << o_.num_res_blocks << " res blocks (layout " << layout << ")");
    at::Tensor v = t.to(at::kFloat);
    if (v.dim() == 2 && it->second.size() == 4) v = v.reshape({v.size(0), v.size(1), 1, 1});  // linear attention proj
    CL_CHECK(v.sizes().vec() == it->second, "VAE weights `" << path << "`: tensor `" << stored << "` has shape "
                                                            << shape_str(v.sizes()) << ", the decoder expects "
                                                            << shape_str(it->second));
    weights_[name] = v.contiguous();
  }
  for (auto& [name, shape] : want)
    CL_CHECK(weights_.count(name), "VAE weights `" << path << "` (layout " << layout << ") lack `" << name
                                                   << "`: not an SD VAE decoder of this shape");
  return layout;
}

const at::Tensor& SdVaeDecoder::w(const std::string& name) const {
  auto it = weights_.find(name);
  CL_CHECK(it != weights_.end(), "sd_vae: no weights loaded (`" << name << "`); call load() first");
  return it->second;
}

at::Tensor SdVaeDecoder::resnet(const at::Tensor& x, const std::string& p) const {
  auto h = at::conv2d(swish(at::group_norm(x, 32, w(p + ".norm1.weight"), w(p + ".norm1.bias"), 1e-6)),
                      w(p + ".conv1.weight"), w(p + ".conv1.bias"), 1, 1);
  h = at::conv2d(swish(at::group_norm(h, 32, w(p + ".norm2.weight"), w(p + ".norm2.bias"), 1e-6)), w(p + ".conv2.weight"),
                 w(p + ".conv2.bias"), 1, 1);
  const bool shortcut = weights_.count(p + ".nin_shortcut.weight") > 0;
  return (shortcut ? at::conv2d(x, w(p + ".nin_shortcut.weight"), w(p + ".nin_shortcut.bias")) : x) + h;
}

at::Tensor SdVaeDecoder::attention(const at::Tensor& x, const std::string& p) const {
  auto h = at::group_norm(x, 32, w(p + ".norm.weight"), w(p + ".norm.bias"), 1e-6);
  auto q = at::conv2d(h, w(p + ".q.weight"), w(p + ".q.bias"));
  auto k = at::conv2d(h, w(p + ".k.weight"), w(p + ".k.bias"));
  auto v = at::conv2d(h, w(p + ".v.weight"), w(p + ".v.bias"));
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto a = at::bmm(q.reshape({B, C, H * W}).permute({0, 2, 1}), k.reshape({B, C, H * W}));  // [B, HW, HW]
  a = at::softmax(a * std::pow(double(C), -0.5), 2);
  auto out = at::bmm(v.reshape({B, C, H * W}), a.permute({0, 2, 1})).reshape({B, C, H, W});
  return x + at::conv2d(out, w(p + ".proj_out.weight"), w(p + ".proj_out.bias"));
}

at::Tensor SdVaeDecoder::decode(const at::Tensor& latents) const {
  auto h = at::conv2d(latents / o_.scaling, w("post_quant_conv.weight"), w("post_quant_conv.bias"));
  h = at::conv2d(h, w("decoder.conv_in.weight"), w("decoder.conv_in.bias"), 1, 1);
  h = resnet(h, "decoder.mid.block_1");
  h = attention(h, "decoder.mid.attn_1");
  h = resnet(h, "decoder.mid.block_2");
  for (int level = int(o_.ch_mult.size()) - 1; level >= 0; --level) {
    const std::string up = "decoder.up." + std::to_string(level);
    for (int j = 0; j <= o_.num_res_blocks; ++j) h = resnet(h, up + ".block." + std::to_string(j));
    if (level != 0) {
      h = at::upsample_nearest2d(h, {h.size(2) * 2, h.size(3) * 2});
      h = at::conv2d(h, w(up + ".upsample.conv.weight"), w(up + ".upsample.conv.bias"), 1, 1);
    }
  }
  h = swish(at::group_norm(h, 32, w("decoder.norm_out.weight"), w("decoder.norm_out.bias"), 1e-6));
  return at::conv2d(h, w("decoder.conv_out.weight"), w("decoder.conv_out.bias"), 1, 1);
}

at::Tensor to_uint8_nhwc(const at::Tensor& images) {
  return (127.5 * images + 128.0).clamp(0, 255).permute({0, 2, 3, 1}).contiguous().to(at::kByte);
}

namespace {
SdVaeDecoder loaded_vae(const std::string& path) {
  CL_CHECK(std::filesystem::is_regular_file(path),
           "decoder.weights: VAE file `" << path << "` not found; the SD VAE (sd-vae-ft-ema / -mse, "
                                            "diffusion_pytorch_model.safetensors) or a whole SD checkpoint (docs/full-size.md)");
  const SafetensorsFile f = read_safetensors(path);
  SdVaeDecoder vae(sd_vae_options_of(f, path));
  vae.load(f, path);
  return vae;
}
}  // namespace

SdVae::SdVae(const SdVaeComponentOptions& o) : batch_(o.batch), vae_(loaded_vae(resolve_path(o.weights))) {}

at::Tensor SdVae::decode(const at::Tensor& latents) {
  CL_CHECK(latents.dim() == 4, "the sd_vae decoder takes latents [N, C, h, w]; the samples are " << shape_str(latents.sizes()));
  std::vector<at::Tensor> out;
  for (int64_t s = 0; s < latents.size(0); s += batch_)
    out.push_back(vae_.decode(latents.narrow(0, s, std::min<int64_t>(batch_, latents.size(0) - s))));
  return at::cat(out);
}

}  // namespace cachelab
