#include "caches/magcache.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "caches/calibration.h"
#include "framework/error.h"

namespace cachelab {

int residual_site(const std::vector<Site>& sites) {
  const int body = find_site(sites, SiteKind::Body);
  return body >= 0 ? body : find_site(sites, SiteKind::Model);
}

std::vector<double> resample_nearest(const std::vector<double>& table, int steps) {
  CL_CHECK(!table.empty(), "magcache: the ratio table is empty");
  if (int(table.size()) == steps) return table;
  std::vector<double> out(size_t(std::max(steps, 0)));
  const double n = double(table.size());
  for (int i = 0; i < steps; ++i) {
    const double pos = steps > 1 ? double(i) * (n - 1) / double(steps - 1) : 0.0;
    out[size_t(i)] = table[size_t(std::lround(pos))];
  }
  return out;
}

void MagCachePolicy::start_calibration() {
  calibrating_ = true;
  fit_sum_.clear(), fit_n_.clear();
}

std::string MagCachePolicy::finish_calibration() {
  calibrating_ = false;
  CL_CHECK(!fit_sum_.empty(), "magcache: the calibration run saw no step of the body");
  table_.assign(fit_sum_.size(), 1.0);
  std::ostringstream os, summary;
  os.precision(9);
  for (size_t t = 0; t < fit_sum_.size(); ++t) {
    if (fit_n_[t] > 0) table_[t] = fit_sum_[t] / fit_n_[t];
    os << table_[t] << (t + 1 == fit_sum_.size() ? "\n" : " ");
  }
  const std::string path = write_calibration_file(
      o_.calibration, "magcache per-step magnitude ratios: mean over tokens of ||r_t|| / ||r_{t-1}||, r = body residual",
      digest_, os.str());
  loaded_ = true;
  gamma_ = resample_nearest(table_, std::max(inner_count_, 1));
  summary.precision(4);
  summary << "magcache: " << table_.size() << " magnitude ratios (first " << table_[std::min<size_t>(1, table_.size() - 1)]
          << ", last " << table_.back() << ") -> " << path;
  return summary.str();
}

void MagCachePolicy::begin_run(RunContext& ctx) {
  site_ = residual_site(*ctx.sites);
  CL_CHECK(site_ >= 0, "magcache: this backbone has no site of kind body or model");
  inner_count_ = ctx.inner_steps > 0 ? ctx.inner_steps : ctx.steps;
  steps_ = ctx.steps;
  if (!o_.calibration.empty() && digest_.empty()) digest_ = backbone_digest(ctx);
  if (calibrating_) {
    if (fit_sum_.empty()) fit_sum_.assign(size_t(inner_count_), 0.0), fit_n_.assign(size_t(inner_count_), 0);
  } else if (!loaded_) {
    if (o_.calibration.empty()) {
      table_ = o_.ratios;
    } else {
      table_ = calibration_numbers(read_calibration_file(o_.calibration, digest_, "magcache"), o_.calibration, "magcache");
      CL_CHECK(!table_.empty(), "magcache: `" << o_.calibration << "` holds no ratios");
    }
    loaded_ = true;
  }
  if (!calibrating_) gamma_ = resample_nearest(table_, inner_count_);
  residual_ = at::Tensor();
  ratio_ = 1, err_ = 0, skipped_ = 0;
}

void MagCachePolicy::begin_step(const StepIndex& step) {
  step_ = step.index;
  inner_ = step.inner_count > 0 ? step.inner : step.index;
  if (step.inner == 0) residual_ = at::Tensor(), ratio_ = 1, err_ = 0, skipped_ = 0;  // a new outer iteration
}

Tensors MagCachePolicy::at(SiteCall& call, const Next& next) {
  if (call.site != site_) return next(call);
  const at::Tensor& in = call.inputs[0];
  if (calibrating_) {
    Tensors out = next(call);
    CL_CHECK(out[0].sizes() == in.sizes(), "magcache: the " << call.info->name << " site's output shape differs from "
                                                                                   "its input; no residual to cache");
    auto r = (out[0] - in).to(at::kFloat);
    if (residual_.defined() && inner_ < int(fit_sum_.size())) {
      // Per token (all but the batch and last dims folded): ||r_t|| / ||r_{t-1}||, averaged.
      auto cur = r.reshape({-1, r.size(-1)}).norm(2, -1), prev = residual_.reshape({-1, r.size(-1)}).norm(2, -1);
      fit_sum_[size_t(inner_)] += (cur / prev.clamp_min(1e-12)).mean().item<double>();
      fit_n_[size_t(inner_)] += 1;
    }
    residual_ = r;
    return out;
  }
  const int retained = int(std::ceil(o_.retention_ratio * inner_count_ - 1e-9));
  if (inner_ >= retained && residual_.defined() && inner_ < int(gamma_.size())) {
    ratio_ *= gamma_[size_t(inner_)];
    err_ += std::abs(1.0 - ratio_);
    skipped_ += 1;
    call.log->signal = err_;
    if (err_ <= o_.threshold && skipped_ <= o_.max_skip) {
      call.log->decision = Decision::Reuse;
      return {in + residual_};
    }
  }
  ratio_ = 1, err_ = 0, skipped_ = 0;
  Tensors out = next(call);
  CL_CHECK(out[0].sizes() == in.sizes(), "magcache: the " << call.info->name << " site's output shape differs from "
                                                                                 "its input; no residual to cache");
  residual_ = out[0] - in;
  return out;
}

}  // namespace cachelab
