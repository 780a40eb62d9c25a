#include "caches/taylorseer.h"

#include <ATen/ATen.h>

#include "framework/error.h"

namespace cachelab {

void TaylorSeerPolicy::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  selected_.assign(sites.size(), false);
  history_.assign(sites.size(), History());
  int matched = 0;
  for (size_t i = 0; i < sites.size(); ++i)
    for (auto& l : o_.layers)
      if (sites[i].kind == site_kind_from_name(l)) selected_[i] = true, ++matched;
  CL_CHECK(matched > 0, "taylorseer: no site of this backbone has a kind in `layers`");
}

std::vector<at::Tensor> TaylorSeerPolicy::coefficients(const std::vector<double>& steps,
                                                       const std::vector<at::Tensor>& values, const std::string& form) {
  const size_t n = values.size();
  CL_CHECK(n >= 1 && steps.size() == n, "taylorseer: a forecast needs at least one computed point");
  if (form == "taylor") {
    // d_i at the newest point, by repeated difference quotients between consecutive points;
    // each level's quotients sit at the later point of each pair.
    std::vector<at::Tensor> level(values.begin(), values.end()), d = {values.back()};
    std::vector<double> x(steps.begin(), steps.end());
    for (size_t order = 1; order < n; ++order) {
      std::vector<at::Tensor> next;
      for (size_t j = 1; j < level.size(); ++j) next.push_back((level[j] - level[j - 1]) / (x[j] - x[j - 1]));
      x.erase(x.begin());
      level = std::move(next);
      d.push_back(level.back());
    }
    return d;
  }
  // Newton's divided differences: coef[j] = f[s_0 .. s_j].
  std::vector<at::Tensor> coef(values.begin(), values.end());
  for (size_t j = 1; j < n; ++j)
    for (size_t i = n - 1; i >= j; --i) coef[i] = (coef[i] - coef[i - 1]) / (steps[i] - steps[i - j]);
  return coef;
}

at::Tensor TaylorSeerPolicy::evaluate(const std::vector<at::Tensor>& coef, const std::vector<double>& steps, double s,
                                      const std::string& form) {
  const size_t n = coef.size();
  if (n == 1) return coef[0];
  if (form == "taylor") {
    // sum_i d_i (s - s_k)^i / i!, nested: d_0 + dx (d_1 + dx/2 (d_2 + dx/3 (...)))
    const double dx = s - steps.back();
    at::Tensor out = coef[n - 1];
    for (size_t i = n - 1; i-- > 0;) out = coef[i] + out * (dx / double(i + 1));
    return out;
  }
  at::Tensor out = coef[n - 1];
  for (size_t j = n - 1; j-- > 0;) out = coef[j] + out * (s - steps[j]);
  return out;
}

at::Tensor TaylorSeerPolicy::forecast(const std::vector<double>& steps, const std::vector<at::Tensor>& values,
                                      double s, const std::string& form) {
  return evaluate(coefficients(steps, values, form), steps, s, form);
}

Tensors TaylorSeerPolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  History& h = history_[s];
  const bool compute = !selected_[s] || h.values.empty() || step_ < o_.warmup_steps ||
                       (step_ - o_.warmup_steps) % o_.interval == 0;
  if (!compute) {
    call.log->decision = o_.order == 0 ? Decision::Reuse : Decision::Predict;
    return {evaluate(h.coef, h.steps, double(step_), o_.form)};
  }
  Tensors out = next(call);
  if (selected_[s]) {
    h.steps.push_back(double(step_));
    h.values.push_back(out[0]);
    if (h.values.size() > size_t(o_.order) + 1) h.steps.erase(h.steps.begin()), h.values.erase(h.values.begin());
    h.coef = coefficients(h.steps, h.values, o_.form);
  }
  return out;
}

}  // namespace cachelab
