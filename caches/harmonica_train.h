// HarmoniCa (Huang et al., ICML 2025): training the Learning-to-Cache router (caches/l2c.h,
// same logits [T, rows, kinds], same router file) so that training matches inference.
// `cachelab train` with `model: l2c` and `train.objective: harmonica`.
//
// Step-Wise Denoising Training (SDT). `batch_size` starting noises (drawn from the
// training trajectories) are denoised through all T steps with the router in the loop:
// step 0 and the full steps (full_every) compute every routed site and fill the cache; at a
// routed step i the router blends s * fresh + (1 - s) * cached (L2cRouter::Mode::Unroll),
// where `cached` is what the router's own earlier steps left (a routed site with
// s > threshold refreshes it, as at inference, so reused values may be many steps old),
// and the sample moves on with the blended output. Each routed step is one iteration:
//     loss_i = w_i * MSE(blended guided output at step i, teacher_i) + lambda * mean_j s_ij,
// backward, one Adam step on row i of the logits. Adam's moments and bias correction are
// kept per row and a row moves only at its own step (the paper's routers are one
// parameter per step). The sample and the cache are detached between steps, so memory
// is one step's graph; a new unroll starts after the last routed step.
// The teacher (`teacher`): `input`, the paper's: the uncached guided output at the
// unroll's own sample x_i (one more forward per step); `trajectory`: the uncached
// trajectory's output at step i (L2cPairs::target, free; deterministic samplers only).
//
// Image Error Proxy-Guided Objective (IEPO). w_i stands for step i's effect on the final
// image. With X_{<i} the final image of a run from the same noise that applies the
// current router (relaxed blend, as in training) at the routed steps before i and
// computes every site from step i on,
//     lambda_i = mean (X_{<i'} - X_{<i})^2,   i' = the routed step after i
// (for the last routed step X_{<i'} is the run routed at every routed step): how much the
// router's step i changes the final image on top of its earlier steps (the definition of
// the official implementation, on `proxy_samples` training trajectories). Here the
// weights are w_i = lambda_i / mean over routed steps of lambda (mean 1, so `lambda` keeps
// the scale of the L2C objective), floored at 1e-3 so that all are positive; all 1 when
// every lambda_i is 0. They are measured before the first iteration and again before
// every `refresh_every`-th one (0: never; uniform weights, SDT alone). A proxy is one
// routed run plus one uncached run from every routed step on, the latter batched by step:
// about T * routed / 2 sample-steps, e.g. 8 samples x 650 for 50 DDIM steps.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "caches/l2c_train.h"

namespace cachelab {

class HarmonicaTrainer {
 public:
  using Loss = L2cTrainer::Loss;
  // The router's logits, the routed steps and the L2C pair objective live in base().
  HarmonicaTrainer(Backbone& bb, const Sampler& sampler, const Guidance& guidance, L2cPairs pairs,
                   int64_t train_count, const L2cTrainOptions& o);
  ~HarmonicaTrainer();

  // One Adam step at the next routed step of the running unroll; refreshes the IEPO
  // weights first when due (iterations 1, 1 + refresh_every, ...).
  Loss iterate();
  // lambda_i (above) with the current logits, float64 [T], 0 at the unrouted steps.
  at::Tensor image_error_proxy();
  void refresh_weights();  // measures the proxy, sets the weights
  // w_i, float64 [T]: 0 at unrouted steps, positive at routed ones.
  const at::Tensor& weights() const { return weights_; }
  // The iterations (1-based) a refresh preceded.
  const std::vector<int>& refreshes() const { return refreshes_; }
  int last_step() const { return last_step_; }
  // The SDT objective (current weights) over unrolls of trajectories [first, first + n),
  // no gradient: the mean over routed steps and samples of w_i * MSE + lambda * mean
  // score; `hard` replaces s by the inference decision (the unroll is then the
  // inference trajectory).
  Loss evaluate(int64_t first, int64_t n, bool hard = false);
  L2cTrainer& base() { return base_; }
  at::Tensor& logits() { return base_.logits(); }

 private:
  at::Tensor guided(Hooks& hooks, const at::Tensor& x, int step, const at::Tensor& labels);
  StepIndex step_index(int step) const;
  at::Tensor noise_like(const at::Tensor& x, at::Generator& gen) const;
  at::Tensor teacher(const at::Tensor& x, int step, const at::Tensor& traj, const at::Tensor& labels);
  void start_unroll();
  void adam_row(int step);

  Backbone& bb_;
  const Sampler& sampler_;
  const Guidance& guidance_;
  L2cTrainer base_;
  L2cTrainOptions o_;
  int steps_ = 0;
  std::vector<bool> routed_;  // per step
  // The training unroll and a scratch router (proxy, evaluation), both over base_'s logits.
  std::unique_ptr<L2cRouter> unroll_router_, scratch_router_;
  std::unique_ptr<LayerHooks> unroll_hooks_, scratch_hooks_;
  std::unique_ptr<Hooks> plain_;
  at::Generator gen_;
  at::Tensor x_, traj_, labels_;  // the running unroll: sample entering step next_
  int next_ = 0;
  at::Tensor m_, v_;         // Adam moments, as the logits
  std::vector<int> count_;   // Adam steps per row
  at::Tensor weights_;
  std::vector<int> refreshes_;
  int iteration_ = 0, last_step_ = -1;
};

// Mean squared error of the final images of the thresholded router (the inference
// decisions, as `cachelab run`) against uncached runs from the same noise, over
// trajectories [first, first + n) of `pairs`, in batches of o.batch_size.
double router_image_mse(Backbone& bb, const Sampler& sampler, const Guidance& guidance, const at::Tensor& logits,
                        const L2cPairs& pairs, int64_t first, int64_t n, const L2cTrainOptions& o);

}  // namespace cachelab
