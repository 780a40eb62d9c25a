// The training objectives: DDPM epsilon MSE, plus (for a backbone that learns its variance)
// the variational bound term of the improved-DDPM "hybrid" loss, as the reference DiT trains;
// and rectified flow (velocity MSE along the straight noise-data path).
#pragma once
#include <ATen/core/Tensor.h>

#include "framework/sampler.h"

namespace cachelab {

struct DiffusionLoss {
  at::Tensor mse;  // [B] mean squared error of the predicted epsilon
  at::Tensor vb;   // [B] bound term (bits per dimension, times T/1000); undefined without learned sigma
  at::Tensor total() const;  // mean over the batch of mse + vb
};

// model_out: [B, C or 2C, H, W] backbone output for x_t (epsilon first, then the variance
// interpolation v in [-1, 1] between log posterior variance and log beta). x0 in [-1, 1].
// The vb term sees the predicted mean through a stop-gradient, so it trains the variance only.
DiffusionLoss diffusion_loss(const NoiseSchedule& s, const at::Tensor& model_out, const at::Tensor& x0,
                             const at::Tensor& xt, const at::Tensor& t, const at::Tensor& noise);

// KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats.
at::Tensor normal_kl(const at::Tensor& mean1, const at::Tensor& logvar1, const at::Tensor& mean2,
                     const at::Tensor& logvar2);

// log P(x) of data quantised to 256 levels in [-1, 1] under N(mean, exp(log_scale)^2),
// elementwise; the end bins take the tails, so the 256 probabilities sum to one.
at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& mean,
                                               const at::Tensor& log_scale);

// Rectified flow, the convention of the euler_flow / heun_flow samplers: t in [0, 1] (1 =
// pure noise), x_t = (1 - t) x0 + t noise, whose time derivative is the velocity
// v = noise - x0 that the model predicts. x0, noise: [B, ...]; t: [B] float in [0, 1].
at::Tensor flow_interpolate(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t);
at::Tensor flow_velocity_target(const at::Tensor& x0, const at::Tensor& noise);
// [B] mean squared error of the first C channels of model_out against noise - x0.
at::Tensor flow_loss(const at::Tensor& model_out, const at::Tensor& x0, const at::Tensor& noise);

}  // namespace cachelab
