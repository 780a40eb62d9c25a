#include "caches/dec.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/registries.h"
#include "framework/safetensors.h"

namespace cachelab {

// A site output's channels: the last dim of token outputs [B, N, D], dim 1 of feature maps
// [B, C, H, W] (U-Net branches and blocks).
static int64_t channel_dim(const at::Tensor& x) { return x.dim() == 4 ? 1 : x.dim() - 1; }

at::Tensor DecCorrector::rows(const at::Tensor& x) const {
  if (o_.per == "tensor") return x.reshape({-1, 1});
  const int64_t c = channel_dim(x);
  return x.movedim(c, -1).reshape({-1, x.size(c)});
}

at::Tensor DecCorrector::per_channel(const at::Tensor& v, const at::Tensor& x) const {
  auto t = v.to(x.options());
  if (o_.per == "tensor" || channel_dim(x) == x.dim() - 1) return t;
  std::vector<int64_t> shape(size_t(x.dim()), 1);
  shape[size_t(channel_dim(x))] = t.numel();
  return t.view(shape);
}

DecCorrector::DecCorrector(const DecOptions& o, const BuildContext& ctx) : o_(o) {
  inner_ = caches().build(o.inner.node, nullptr, ctx);
}
DecCorrector::~DecCorrector() = default;

void DecCorrector::load_table() {
  const std::string path = resolve_path(o_.table);
  CL_CHECK(std::filesystem::exists(path), "dec: no coefficient table at `"
                                              << path << "`; fit it with `cachelab calibrate EXP.yaml` (it runs each "
                                                         "dec variant once and writes cache.table)");
  table_.clear();
  std::map<std::string, at::Tensor> byname;
  auto file = read_safetensors(path);
  const auto digest = file.metadata.find("backbone_digest");
  CL_CHECK(digest != file.metadata.end() && digest->second == digest_,
           "dec: table `" << path << "` was fitted on weights with digest `"
                          << (digest == file.metadata.end() ? std::string("(none recorded)") : digest->second)
                          << "`, these have `" << digest_ << "`; re-run `cachelab calibrate`");
  for (auto& [name, t] : file.tensors) byname[name] = t;
  for (auto& [name, t] : byname) {
    // "<step>/<site>/a" and "<step>/<site>/b"
    if (name.size() < 2 || name.compare(name.size() - 2, 2, "/a") != 0) continue;
    const std::string stem = name.substr(0, name.size() - 2);
    const auto slash = stem.find('/');
    const int step = std::stoi(stem.substr(0, slash));
    const std::string site = stem.substr(slash + 1);
    auto it = std::find(site_names_.begin(), site_names_.end(), site);
    CL_CHECK(it != site_names_.end(), "dec: table `" << path << "` names site `" << site
                                                     << "`, which this backbone lacks; re-run `cachelab calibrate`");
    auto b = byname.find(stem + "/b");
    CL_CHECK(b != byname.end(), "dec: table `" << path << "` lacks `" << stem << "/b`");
    table_[{step, int(it - site_names_.begin())}] = {t.to(at::kFloat), b->second.to(at::kFloat)};
  }
  loaded_ = true;
}

void DecCorrector::begin_run(RunContext& ctx) {
  inner_->begin_run(ctx);
  digest_ = ctx.backbone_digest;
  site_names_.clear();
  for (auto& s : *ctx.sites) site_names_.push_back(s.name);
  extra_ = ctx.declare_site_extra("dec_correction_rel", "ratio",
                                  "mean |a x + b - x| / mean |x| of the corrected stand-in (dec)");
  if (!calibrating_ && o_.apply && !held_ && !loaded_) load_table();
}

void DecCorrector::begin_step(const StepIndex& step) {
  step_ = step.index;
  inner_->begin_step(step);
}

Tensors DecCorrector::at(SiteCall& call, const Next& next) {
  Tensors out = inner_->at(call, next);
  const Decision d = call.log->decision;
  const bool stand_in = call.log->computed_fraction == 0.0 && (d == Decision::Reuse || d == Decision::Predict);
  if (!stand_in || out.empty() || held_) return out;
  const Key key{step_, call.site};
  if (calibrating_) {
    Tensors truth = next(call);
    sums_[key].add(rows(out[0]), rows(truth[0]));
    return o_.trajectory == "cached" ? out : truth;
  }
  if (!o_.apply) return out;
  auto it = table_.find(key);
  if (it == table_.end()) return out;  // a stand-in calibration never saw: left as it is
  const auto& [a, b] = it->second;
  auto corrected = out[0] * per_channel(a, out[0]) + per_channel(b, out[0]);
  if (call.log->extra) {
    const double base = out[0].abs().mean().item<double>();
    call.log->set_extra(extra_, base > 0 ? (corrected - out[0]).abs().mean().item<double>() / base : 0.0);
  }
  out[0] = corrected;
  return out;
}

void DecCorrector::start_calibration() {
  calibrating_ = true;
  held_ = false;
  sums_.clear();
}

std::string DecCorrector::finish_calibration() {
  CL_CHECK(calibrating_, "dec: finish_calibration without start_calibration");
  calibrating_ = false;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  double mean_a = 0;
  for (auto& [key, s] : sums_) {
    auto [a, b] = s.fit();
    const std::string stem = std::to_string(key.first) + "/" + site_names_[size_t(key.second)];
    tensors.emplace_back(stem + "/a", a.to(at::kFloat));
    tensors.emplace_back(stem + "/b", b.to(at::kFloat));
    mean_a += a.mean().item<double>();
  }
  CL_CHECK(!tensors.empty(), "dec: the inner policy produced no stand-in during calibration; nothing to fit");
  const std::string path = resolve_path(o_.table);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  write_safetensors(path, tensors,
                    {{"method", o_.per == "tensor" ? "residual_linear (one affine pair per step and site)"
                                                   : "dec (per-channel affine stand-in correction)"},
                     {"trajectory", o_.trajectory},
                     {"backbone_digest", digest_}});
  loaded_ = false;
  std::ostringstream os;
  os << "dec: fitted " << sums_.size() << " (step, site) pairs, mean a " << mean_a / double(sums_.size()) << " -> "
     << path;
  return os.str();
}

}  // namespace cachelab
