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

at::Tensor TaylorSeerPolicy::forecast(const std::vector<double>& steps, const std::vector<at::Tensor>& values,
                                      double s, const std::string& form) {
  const size_t n = values.size();
  CL_CHECK(n >= 1 && steps.size() == n, "taylorseer: forecast needs at least one computed point");
  if (n == 1) return values[0];
  if (form == "taylor") {
    // d[i] at the newest point, by repeated difference quotients between consecutive points.
    std::vector<at::Tensor> level(values.begin(), values.end());
    std::vector<double> x(steps.begin(), steps.end());
    at::Tensor out = values.back();
    double dx = s - steps.back(), term = 1.0, fact = 1.0;
    for (size_t order = 1; order < n; ++order) {
      std::vector<at::Tensor> next;
      for (size_t j = 1; j < level.size(); ++j) next.push_back((level[j] - level[j - 1]) / (x[j] - x[j - 1]));
      // Each level's quotients sit at the later point of each pair.
      x.erase(x.begin());
      level = std::move(next);
      term *= dx;
      fact *= double(order);
      out = out + level.back() * (term / fact);
    }
    return out;
  }
  // Newton's divided differences: coef[j] = f[s_0 .. s_j], evaluated in nested form.
  std::vector<at::Tensor> coef(values.begin(), values.end());
  for (size_t j = 1; j < n; ++j)
    for (size_t i = n - 1; i >= j; --i) coef[i] = (coef[i] - coef[i - 1]) / (steps[i] - steps[i - j]);
  at::Tensor out = coef[n - 1];
  for (size_t j = n - 1; j-- > 0;) out = coef[j] + out * (s - steps[j]);
  return out;
}

Tensors TaylorSeerPolicy::at(SiteCall& call, const Next& next) {
  const size_t s = size_t(call.site);
  History& h = history_[s];
  const bool compute = !selected_[s] || h.values.empty() || step_ < o_.warmup_steps ||
                       (step_ - o_.warmup_steps) % o_.interval == 0;
  if (!compute) {
    call.log->decision = o_.order == 0 ? Decision::Reuse : Decision::Predict;
    return {forecast(std::vector<double>(h.steps.begin(), h.steps.end()),
                     std::vector<at::Tensor>(h.values.begin(), h.values.end()), double(step_), o_.form)};
  }
  Tensors out = next(call);
  if (selected_[s]) {
    h.steps.push_back(double(step_));
    h.values.push_back(out[0]);
    while (h.values.size() > size_t(o_.order) + 1) h.steps.pop_front(), h.values.pop_front();
  }
  return out;
}

}  // namespace cachelab
