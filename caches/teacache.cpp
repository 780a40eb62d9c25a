#include "caches/teacache.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "caches/calibration.h"
#include "framework/error.h"
#include "framework/paths.h"
#include "metrics/functional.h"

namespace cachelab {

std::vector<double> polyfit(const std::vector<double>& x, const std::vector<double>& y, int degree) {
  CL_CHECK(x.size() == y.size() && x.size() > size_t(degree),
           "teacache: fitting a degree-" << degree << " polynomial needs more than " << degree << " points, got "
                                         << x.size() << " (steps of the calibration run); use more sampler steps or a "
                                                                         "lower fit_degree");
  const int64_t n = int64_t(x.size());
  auto A = at::empty({n, degree + 1}, at::kDouble), b = at::tensor(y, at::kDouble).reshape({n, 1});
  // Scale x to [0, 1] for conditioning, then undo the scaling on the coefficients.
  const double scale = std::max(1e-12, *std::max_element(x.begin(), x.end()));
  auto acc = A.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i)
    for (int d = 0; d <= degree; ++d) acc[i][d] = std::pow(x[size_t(i)] / scale, degree - d);
  auto sol = std::get<0>(at::linalg_lstsq(A, b)).reshape({-1});
  std::vector<double> c(size_t(degree) + 1);
  for (int d = 0; d <= degree; ++d) c[size_t(d)] = sol[d].item<double>() / std::pow(scale, degree - d);
  return c;
}

void TeaCachePolicy::start_calibration() {
  calibrating_ = true;
  fit_x_.clear(), fit_y_.clear();
}

std::string TeaCachePolicy::finish_calibration() {
  calibrating_ = false;
  coef_ = polyfit(fit_x_, fit_y_, o_.fit_degree);
  std::ostringstream os;
  os.precision(17);
  for (double c : coef_) os << c << " ";
  const std::string path = write_calibration_file(
      o_.calibration, "teacache coefficients, highest degree first: residual change ~ poly(modulated-input change)",
      digest_, os.str());
  loaded_ = true;
  std::ostringstream msg;
  msg << "teacache: fitted a degree-" << o_.fit_degree << " polynomial on " << fit_x_.size() << " steps -> " << path;
  return msg.str();
}

void TeaCachePolicy::begin_run(RunContext& ctx) {
  tap_ = body_ = -1;
  for (size_t i = 0; i < ctx.taps->size(); ++i)
    if ((*ctx.taps)[i].kind == TapKind::ModulatedInput) tap_ = int(i);
  for (size_t i = 0; i < ctx.sites->size(); ++i)
    if ((*ctx.sites)[i].kind == SiteKind::Body && (*ctx.sites)[i].stream == 0) body_ = int(i);
  CL_CHECK(tap_ >= 0, "teacache: this backbone exposes no modulated-input tap (its first block's timestep-modulated input; "
                      "the DiT and PixArt do)");
  CL_CHECK(body_ >= 0, "teacache: this backbone has no site of kind body");
  count_ = ctx.steps;
  step_ = 0;
  accumulated_ = 0;
  prev_input_ = residual_ = prev_residual_ = at::Tensor();
  if (!o_.calibration.empty() && digest_.empty()) digest_ = backbone_digest(ctx);
  if (!o_.calibration.empty() && !calibrating_ && !loaded_) {
    const std::string path = resolve_path(o_.calibration);
    coef_ = calibration_numbers(read_calibration_file(o_.calibration, digest_, "teacache"), path, "teacache");
    CL_CHECK(!coef_.empty(), "teacache: `" << path << "` holds no coefficients");
    loaded_ = true;
  }
}

void TeaCachePolicy::begin_step(const StepIndex& step) {
  step_ = step.index;
  signal_ = kNoSignal;
}

double TeaCachePolicy::rescale(double d) const {
  double y = 0;
  for (double c : coef_) y = y * d + c;
  return y;
}

void TeaCachePolicy::tap(int, const at::Tensor& value) {
  raw_ = prev_input_.defined() ? rel_l1(value, prev_input_) : kNoSignal;
  signal_ = std::isnan(raw_) ? kNoSignal : rescale(raw_);
  prev_input_ = value;
}

Tensors TeaCachePolicy::at(SiteCall& call, const Next& next) {
  if (call.site != body_) return next(call);
  if (calibrating_) {
    Tensors out = next(call);
    auto residual = out[0] - call.inputs[0];
    if (prev_residual_.defined() && !std::isnan(raw_)) {
      fit_x_.push_back(raw_);
      fit_y_.push_back(rel_l1(residual, prev_residual_));
    }
    prev_residual_ = residual;
    return out;
  }
  const bool edge = step_ == 0 || step_ == count_ - 1 || !residual_.defined() || std::isnan(signal_);
  if (!edge) {
    accumulated_ += signal_;
    call.log->signal = accumulated_;
    if (accumulated_ < o_.threshold) {
      call.log->decision = Decision::Reuse;
      return {call.inputs[0] + residual_};
    }
  }
  accumulated_ = 0;
  Tensors out = next(call);
  residual_ = out[0] - call.inputs[0];
  return out;
}

}  // namespace cachelab
