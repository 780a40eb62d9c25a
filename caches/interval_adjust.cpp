#include "caches/interval_adjust.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/registries.h"
#include "framework/safetensors.h"

namespace cachelab {

namespace {

// The prediction channels of a model-site output: the first C channels, C = the input's.
at::Tensor prediction(const SiteCall& call, const at::Tensor& out) {
  const at::Tensor& x = call.inputs.at(0);
  CL_CHECK(x.is_floating_point() && out.dim() == x.dim() && out.dim() >= 2 && out.size(1) >= x.size(1),
           "interval_adjust: the model output (" << out.sizes() << ") is not a continuous prediction for its input ("
                                                 << x.sizes() << "); it applies to image and video diffusion backbones");
  return out.narrow(1, 0, x.size(1));
}

bool stand_in(const SiteCall& call) {
  const Decision d = call.log->decision;
  return call.log->computed_fraction == 0.0 && (d == Decision::Reuse || d == Decision::Predict);
}

}  // namespace

IntervalAdjust::IntervalAdjust(const IntervalAdjustOptions& o, const BuildContext& ctx)
    : IntervalAdjust(o, caches().build(o.inner.node, nullptr, ctx)) {}
IntervalAdjust::IntervalAdjust(const IntervalAdjustOptions& o, std::unique_ptr<SiteLayer> inner)
    : o_(o), path_(resolve_path(o.table)) {
  inner_ = std::move(inner);
}
IntervalAdjust::~IntervalAdjust() = default;

void IntervalAdjust::load() {
  CL_CHECK(std::filesystem::exists(path_), "interval_adjust: no scale table at `"
                                               << path_ << "` (table: " << o_.table
                                               << "); fit it with `cachelab calibrate EXP.yaml`");
  auto f = read_safetensors(path_);
  CL_CHECK(f.tensors.size() == 1 && f.tensors[0].first == "phi" && f.metadata.count("backbone_digest"),
           "interval_adjust: `" << path_ << "` is not an interval scale table; fit it with `cachelab calibrate`");
  CL_CHECK(f.metadata["backbone_digest"] == digest_,
           "interval_adjust: `" << path_ << "` was fitted on weights with digest `" << f.metadata["backbone_digest"]
                                << "`, these have `" << digest_ << "`; re-run `cachelab calibrate`");
  auto t = f.tensors[0].second.to(at::kDouble).contiguous();
  CL_CHECK(t.numel() == steps_, "interval_adjust: `" << path_ << "` holds " << t.numel() << " steps, this run has "
                                                     << steps_ << "; re-run `cachelab calibrate` for this sampler");
  phi_.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  loaded_ = true;
}

void IntervalAdjust::begin_run(RunContext& ctx) {
  inner_->begin_run(ctx);
  digest_ = ctx.backbone_digest;
  steps_ = ctx.steps;
  extra_ = ctx.declare_site_extra("interval_scale", "ratio",
                                  "the integration interval scale applied on the step (interval_adjust; 1 = none)");
  if (calibrating_) {
    sxy_.assign(size_t(steps_), 0.0), sxx_.assign(size_t(steps_), 0.0);
    return;
  }
  if (o_.apply && !held_ && !loaded_) load();
}

void IntervalAdjust::begin_step(const StepIndex& step) {
  step_ = step.index;
  inner_->begin_step(step);
}

Tensors IntervalAdjust::at(SiteCall& call, const Next& next) {
  if (bypass_) return next(call);  // the calibration's uncached pass: every site computes
  const bool model = call.info && call.info->kind == SiteKind::Model;
  if (model) stood_in_ = false;
  Tensors out = inner_->at(call, next);
  if (!out.empty() && stand_in(call)) stood_in_ = true;
  if (!model || out.empty() || held_) return out;
  const bool cached = stood_in_;
  stood_in_ = false;
  if (calibrating_) {
    if (!cached) return out;
    bypass_ = true;
    Tensors truth;
    try {
      truth = next(call);
    } catch (...) {
      bypass_ = false;
      throw;
    }
    bypass_ = false;
    const auto o = prediction(call, out[0]).to(at::kDouble), y = prediction(call, truth[0]).to(at::kDouble);
    sxy_[size_t(step_)] += (o * y).sum().item<double>();
    sxx_[size_t(step_)] += (o * o).sum().item<double>();
    return o_.trajectory == "cached" ? out : truth;
  }
  if (!o_.apply || size_t(step_) >= phi_.size()) return out;
  const double phi = cached ? phi_[size_t(step_)] : 1.0;
  if (call.log) call.log->set_extra(extra_, phi);
  if (phi == 1.0) return out;
  auto adjusted = out[0].clone();
  prediction(call, adjusted).mul_(phi);
  out[0] = adjusted;
  return out;
}

void IntervalAdjust::start_calibration() {
  calibrating_ = true;
  held_ = false;
  sxy_.clear(), sxx_.clear();
}

std::string IntervalAdjust::finish_calibration() {
  CL_CHECK(calibrating_ && !sxx_.empty(), "interval_adjust: finish_calibration without a calibration run");
  calibrating_ = false;
  auto t = at::ones({int64_t(sxx_.size())}, at::kFloat);
  int fitted = 0;
  double lo = 1e300, hi = -1e300;
  for (size_t i = 0; i < sxx_.size(); ++i) {
    if (!(sxx_[i] > 0)) continue;  // never cached: the interval stays
    const double phi = std::clamp(sxy_[i] / sxx_[i], 1 - o_.clamp, 1 + o_.clamp);
    t[int64_t(i)] = float(phi);
    lo = std::min(lo, phi), hi = std::max(hi, phi);
    ++fitted;
  }
  CL_CHECK(fitted > 0, "interval_adjust: the inner policy cached no step during calibration; nothing to fit");
  std::filesystem::create_directories(std::filesystem::path(path_).parent_path());
  write_safetensors(path_, {{"phi", t}},
                    {{"method", "interval_adjust (integration interval scale per cached step)"},
                     {"trajectory", o_.trajectory},
                     {"backbone_digest", digest_}});
  phi_.clear();
  loaded_ = false;
  std::ostringstream os;
  os << "interval_adjust: " << fitted << " cached steps, scale " << lo << " .. " << hi << " -> " << path_;
  return os.str();
}

}  // namespace cachelab
