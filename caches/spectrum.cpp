#include "caches/spectrum.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"

namespace cachelab {

namespace {
// T_0(t) .. T_m(t)
std::vector<double> chebyshev(double t, int m) {
  std::vector<double> b(size_t(m) + 1);
  b[0] = 1;
  if (m >= 1) b[1] = t;
  for (int j = 2; j <= m; ++j) b[size_t(j)] = 2 * t * b[size_t(j) - 1] - b[size_t(j) - 2];
  return b;
}
}  // namespace

void SpectrumPolicy::begin_run(RunContext& ctx) {
  site_ = find_site(*ctx.sites, SiteKind::Model);
  CL_CHECK(site_ >= 0, "spectrum: this backbone has no model site");
  steps_ = std::max(1, ctx.steps);
  step_ = forecasts_ = 0;
  ws_ = o_.window;
  outputs_.clear(), taus_.clear();
}

std::vector<double> SpectrumPolicy::chebyshev_weights(const std::vector<double>& taus, double at) const {
  const int K = int(taus.size()), M = o_.m + 1;
  auto X = at::empty({K, M}, at::kDouble);
  for (int k = 0; k < K; ++k) {
    const auto b = chebyshev(taus[size_t(k)], o_.m);
    for (int j = 0; j < M; ++j) X[k][j] = b[size_t(j)];
  }
  const auto s = chebyshev(at, o_.m);
  auto xs = at::tensor(s, at::kDouble).reshape({M, 1});
  auto A = X.t().mm(X) + o_.lam * at::eye(M, at::kDouble);
  auto wts = X.mm(at::linalg_solve(A, xs)).reshape({-1});
  return std::vector<double>(wts.data_ptr<double>(), wts.data_ptr<double>() + K);
}

Tensors SpectrumPolicy::at(SiteCall& call, const Next& next) {
  if (call.site != site_) return next(call);
  const int ws = std::max(1, int(std::floor(ws_)));
  const bool forecast = step_ >= o_.warmup && step_ < int(o_.stop * steps_) && outputs_.size() >= 2 &&
                        (forecasts_ + 1) % ws != 0;
  if (forecast) {
    const auto wts = chebyshev_weights(taus_, tau(step_));
    at::Tensor cheb = at::zeros_like(outputs_[0]);
    for (size_t k = 0; k < outputs_.size(); ++k) cheb.add_(outputs_[k], wts[k]);
    const at::Tensor& last = outputs_.back();
    const at::Tensor& prev = outputs_[outputs_.size() - 2];
    const at::Tensor taylor = last + 0.5 * (last - prev);
    ++forecasts_;
    call.log->decision = Decision::Predict;
    call.log->signal = double(ws);
    return {(1 - o_.w) * taylor + o_.w * cheb};
  }
  Tensors out = next(call);
  outputs_.push_back(out[0]);
  taus_.push_back(tau(step_));
  const size_t K = size_t(std::max(o_.m + 1, 6));
  while (outputs_.size() > K) outputs_.erase(outputs_.begin()), taus_.erase(taus_.begin());
  if (step_ >= o_.warmup) ws_ += o_.flex;
  forecasts_ = 0;
  return out;
}

}  // namespace cachelab
