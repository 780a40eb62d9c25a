#include "caches/vc.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/registries.h"
#include "framework/safetensors.h"

namespace cachelab {

VcCorrector::VcCorrector(const VcOptions& o, const BuildContext& ctx) : o_(o), path_(resolve_path(o.table)) {
  if (!o.inner.empty()) inner_ = caches().build(o.inner.node, nullptr, ctx);
}
VcCorrector::~VcCorrector() = default;

double VcCorrector::spread(const at::Tensor& o) {
  return o.reshape({o.size(0), -1}).to(at::kDouble).std(1, /*unbiased=*/false).mean().item<double>();
}

void VcCorrector::load() {
  CL_CHECK(std::filesystem::exists(path_), "vc: no spread table at `" << path_ << "` (table: " << o_.table
                                                                      << "); make it with `cachelab calibrate EXP.yaml`");
  auto f = read_safetensors(path_);
  CL_CHECK(f.metadata.count("backbone_digest") && f.tensors.size() == 1 && f.tensors[0].first == "std",
           "vc: `" << path_ << "` is not a vc table; make it with `cachelab calibrate EXP.yaml`");
  CL_CHECK(f.metadata["backbone_digest"] == digest_,
           "vc: `" << path_ << "` was fitted on weights with digest `" << f.metadata["backbone_digest"]
                   << "`, these have `" << digest_ << "`; re-run `cachelab calibrate`");
  auto t = f.tensors[0].second.to(at::kDouble).contiguous();
  CL_CHECK(t.numel() == steps_, "vc: `" << path_ << "` holds " << t.numel() << " steps, this run has " << steps_
                                        << "; re-run `cachelab calibrate` for this sampler");
  target_.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  loaded_ = true;
}

void VcCorrector::begin_run(RunContext& ctx) {
  if (inner_) inner_->begin_run(ctx);
  digest_ = ctx.backbone_digest;
  steps_ = ctx.steps;
  extra_ = ctx.declare_site_extra("vc_factor", "ratio", "the spread factor vc applied to the model output (1 = none)");
  if (calibrating_) {
    // Only the first calibration run: a quantizer may ask for a second, quantized one.
    if (++calibration_runs_ == 1) sum_.assign(size_t(steps_), 0.0), count_.assign(size_t(steps_), 0.0);
    return;
  }
  if (!loaded_ && !held_) load();
}

void VcCorrector::begin_step(const StepIndex& step) {
  step_ = step.index;
  if (inner_) inner_->begin_step(step);
}

Tensors VcCorrector::at(SiteCall& call, const Next& next) {
  // Calibration follows the full-precision, uncached trajectory: every site computes.
  if (calibrating_) {
    Tensors out = next(call);
    if (calibration_runs_ == 1 && call.info && call.info->kind == SiteKind::Model && !out.empty() &&
        size_t(step_) < sum_.size()) {
      sum_[size_t(step_)] += spread(out[0]) * double(out[0].size(0));
      count_[size_t(step_)] += double(out[0].size(0));
    }
    return out;
  }
  Tensors out = inner_ ? inner_->at(call, next) : next(call);
  if (held_) return out;
  if (!call.info || call.info->kind != SiteKind::Model || out.empty() || size_t(step_) >= target_.size()) return out;
  const double now = spread(out[0]);
  if (!(now > 0) || !(target_[size_t(step_)] > 0)) return out;
  const double f = 1 + o_.strength * (target_[size_t(step_)] / now - 1);
  if (call.log) call.log->set_extra(extra_, f);
  if (f == 1.0) return out;  // strength 0: the inner policy untouched
  auto& o = out[0];
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < o.dim(); ++d) dims.push_back(d);
  auto m = o.mean(dims, /*keepdim=*/true);
  o = m + (o - m) * f;
  return out;
}

void VcCorrector::start_calibration() {
  calibrating_ = true;
  held_ = false;
  calibration_runs_ = 0;
  sum_.clear();
  count_.clear();
}

std::string VcCorrector::finish_calibration() {
  CL_CHECK(calibrating_ && !sum_.empty(), "vc: finish_calibration without a calibration run");
  calibrating_ = false;
  auto t = at::empty({int64_t(sum_.size())}, at::kFloat);
  double lo = 1e300, hi = 0;
  for (size_t i = 0; i < sum_.size(); ++i) {
    CL_CHECK(count_[i] > 0, "vc: the calibration run never reached the model site at step " << i);
    const double v = sum_[i] / count_[i];
    t[int64_t(i)] = float(v);
    lo = std::min(lo, v), hi = std::max(hi, v);
  }
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path());
  write_safetensors(path_, {{"std", t}}, {{"method", "vc (model output spread per step)"}, {"backbone_digest", digest_}});
  target_.clear();
  loaded_ = false;
  std::ostringstream os;
  os << "vc: output spread of " << sum_.size() << " steps (" << lo << " .. " << hi << ") -> " << path_;
  return os.str();
}

}  // namespace cachelab
