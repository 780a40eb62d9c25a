#include "models/diffusion_loss.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"

namespace cachelab {

namespace {

// Per-sample schedule values gathered at t, shaped [B, 1, 1, ...] to broadcast over x.
at::Tensor gather(const std::vector<double>& v, const at::Tensor& t, const at::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = like.size(0);
  return at::tensor(v, at::kDouble).index_select(0, t).to(like.scalar_type()).reshape(shape);
}

at::Tensor mean_per_sample(const at::Tensor& x) { return x.flatten(1).mean(1); }

at::Tensor std_normal_cdf(const at::Tensor& x) { return 0.5 * (1 + at::erf(x * (1 / std::sqrt(2.0)))); }

}  // namespace

at::Tensor DiffusionLoss::total() const { return (vb.defined() ? mse + vb : mse).mean(); }

at::Tensor normal_kl(const at::Tensor& mean1, const at::Tensor& logvar1, const at::Tensor& mean2,
                     const at::Tensor& logvar2) {
  return 0.5 * (logvar2 - logvar1 - 1 + at::exp(logvar1 - logvar2) + (mean1 - mean2).pow(2) * at::exp(-logvar2));
}

at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& mean,
                                               const at::Tensor& log_scale) {
  const double half_bin = 1.0 / 255;
  auto inv_std = at::exp(-log_scale);
  auto centred = x - mean;
  auto cdf_hi = std_normal_cdf(inv_std * (centred + half_bin));
  auto cdf_lo = std_normal_cdf(inv_std * (centred - half_bin));
  const double floor = 1e-12;
  auto log_below_hi = at::log(cdf_hi.clamp_min(floor));       // lowest bin: (-inf, x + half]
  auto log_above_lo = at::log((1 - cdf_lo).clamp_min(floor));  // highest bin: [x - half, inf)
  auto log_bin = at::log((cdf_hi - cdf_lo).clamp_min(floor));
  return at::where(x < -0.999, log_below_hi, at::where(x > 0.999, log_above_lo, log_bin));
}

DiffusionLoss diffusion_loss(const NoiseSchedule& s, const at::Tensor& model_out, const at::Tensor& x0,
                             const at::Tensor& xt, const at::Tensor& t, const at::Tensor& noise) {
  const int64_t C = x0.size(1);
  CL_CHECK(model_out.size(1) == C || model_out.size(1) == 2 * C,
           "diffusion loss: the model gives " << model_out.size(1) << " channels for " << C << "-channel data");
  DiffusionLoss out;
  auto eps = model_out.narrow(1, 0, C);
  out.mse = mean_per_sample((eps - noise).pow(2));
  if (model_out.size(1) == C) return out;

  // Schedule tables: alpha_bar_{t-1} (1 at t = 0) and the posterior q(x_{t-1} | x_t, x_0).
  const int T = s.num_train_steps;
  std::vector<double> abar_prev(T), post_var(T), post_logvar(T), coef_x0(T), coef_xt(T), log_beta(T);
  for (int i = 0; i < T; ++i) {
    abar_prev[i] = i ? s.alpha_bar[i - 1] : 1.0;
    post_var[i] = s.betas[i] * (1 - abar_prev[i]) / (1 - s.alpha_bar[i]);
    coef_x0[i] = s.betas[i] * std::sqrt(abar_prev[i]) / (1 - s.alpha_bar[i]);
    coef_xt[i] = (1 - abar_prev[i]) * std::sqrt(1 - s.betas[i]) / (1 - s.alpha_bar[i]);
    log_beta[i] = std::log(s.betas[i]);
  }
  // The posterior variance is 0 at t = 0: its log takes the t = 1 value there.
  for (int i = 0; i < T; ++i) post_logvar[i] = std::log(post_var[i == 0 ? 1 : i]);

  auto abar = gather(s.alpha_bar, t, x0);
  auto cx0 = gather(coef_x0, t, x0), cxt = gather(coef_xt, t, x0);
  auto min_log = gather(post_logvar, t, x0), max_log = gather(log_beta, t, x0);
  auto true_mean = cx0 * x0 + cxt * xt;

  // Model mean from the detached epsilon (no clipping, as in the bound), learned log variance.
  auto x0_pred = (xt - at::sqrt(1 - abar) * eps.detach()) / at::sqrt(abar);
  auto model_mean = cx0 * x0_pred + cxt * xt;
  auto frac = (model_out.narrow(1, C, C) + 1) / 2;
  auto model_logvar = frac * max_log + (1 - frac) * min_log;

  const double nats_to_bits = 1 / std::log(2.0);
  auto kl = mean_per_sample(normal_kl(true_mean, min_log, model_mean, model_logvar)) * nats_to_bits;
  auto nll = -mean_per_sample(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)) * nats_to_bits;
  // Improved DDPM weighs the whole bound by 1e-3; one sampled timestep estimates it as T
  // times its term, hence T / 1000 (1 for the usual T = 1000).
  out.vb = at::where(t == 0, nll, kl) * (T / 1000.0);
  return out;
}

at::Tensor flow_interpolate(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) {
  CL_CHECK(t.dim() == 1 && t.size(0) == x0.size(0), "flow: t must be [B] for x0 of batch " << x0.size(0));
  std::vector<int64_t> shape(x0.dim(), 1);
  shape[0] = x0.size(0);
  auto tb = t.to(x0.scalar_type()).reshape(shape);
  return (1 - tb) * x0 + tb * noise;
}

at::Tensor flow_velocity_target(const at::Tensor& x0, const at::Tensor& noise) { return noise - x0; }

at::Tensor flow_loss(const at::Tensor& model_out, const at::Tensor& x0, const at::Tensor& noise) {
  const int64_t C = x0.size(1);
  CL_CHECK(model_out.size(1) == C, "flow loss: the model gives " << model_out.size(1) << " channels for " << C
                                                                 << "-channel data (a flow model has no learned sigma)");
  return mean_per_sample((model_out - flow_velocity_target(x0, noise)).pow(2));
}

}  // namespace cachelab
