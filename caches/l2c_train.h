// Training a Learning-to-Cache router (caches/l2c.h) on a frozen backbone, following the
// paper's recipe on consecutive-step pairs of uncached trajectories:
//   1. sample uncached trajectories (the run's sampler and guidance) and keep, for every
//      step i, the sample x_i entering it and the guided model output eps_i;
//   2. per iteration, draw a batch of pairs (trajectory, step i >= 1); a fill pass at
//      step i-1 puts that step's full computation in the router's cache; a blend pass at
//      step i mixes every routed site (caches/l2c.h: a DiT's attn / mlp sub-layers, a U-Net's
//      branches) as s * fresh + (1 - s) * cached;
//   3. loss = MSE(blend output, eps_i) + lambda * mean of the scores s of the pairs'
//      steps (sigmoid of the logits), Adam on the logits only; the backbone's
//      parameters are frozen (requires_grad false); logits are clamped to [-clamp, clamp].
// One batch mixes steps (L2cRouter::set_row_steps), so every iteration updates many rows.
// Autograd is on throughout: the site layers run through LayerHooks, not the runner
// (whose trajectories run in inference mode).
// `objective: harmonica` trains the same router with HarmoniCa's step-wise denoising
// training and image-error proxy weights instead (caches/harmonica_train.h); the router
// file is the same.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "caches/l2c.h"
#include "framework/backbone.h"
#include "framework/router_trainer.h"

namespace cachelab {

class Guidance;
class Sampler;

struct L2cTrainOptions {
  std::string objective = "l2c";  // l2c | harmonica
  double cfg_scale = 4.0;      // guidance of the trajectories and of the objective
  int trajectories = 128;      // uncached trajectories the training pairs are drawn from
  int eval_trajectories = 8;   // held-out trajectories: every step pair of them is the evaluation set
  int pool_batch = 64;         // samples per forward while sampling the trajectories
  int batch_size = 16;         // step pairs per iteration
  int iterations = 300;
  double lr = 0.05;            // Adam on the logits
  double lambda = 0.0003;      // weight of the mean score (the pressure to reuse)
  double init_logit = 2.0;     // every logit starts here (sigmoid 0.88: compute)
  double clamp = 5.0;          // logits are kept in [-clamp, clamp]
  double threshold = 0.5;      // for the reported skip fraction and the thresholded evaluation
  int full_every = 2;          // as cache.full_every: steps 0, N, 2N, ... are not routed (not trained)
  int64_t seed = 0;
  int threads = 2;
  int log_every = 10;
  // HarmoniCa only (caches/harmonica_train.h).
  std::string teacher = "input";  // input | trajectory
  int refresh_every = 50;         // iterations between image-error proxy refreshes; 0 = uniform weights
  int proxy_samples = 8;          // trajectories the proxy is measured on
  std::string output = "models/weights/l2c-dit-mnist-ddim50.safetensors";
  std::string log = "~/.cache/cachelab/l2c-dit-mnist/train_log.h5";
  template <class V>
  void fields(V& v) {
    v("objective", objective,
      "l2c: consecutive-step pairs of uncached trajectories; harmonica: HarmoniCa's step-wise training along the "
      "router's own cached trajectory, each step weighted by an image-error proxy");
    recipe_fields(v);
    v("output", output, "router file written at the end (relative to the project root)");
    v("log", log, "loss curve (HDF5 columns)");
  }
  // Everything but the objective and the files written: a router trainer component's keys.
  template <class V>
  void recipe_fields(V& v) {
    v("cfg_scale", cfg_scale, "guidance scale of the trajectories and the objective (use the runs' run.cfg_scale)");
    v("trajectories", trajectories,
      "uncached trajectories the training pairs (l2c) or the unrolls' starting noises (harmonica) are drawn from");
    v("eval_trajectories", eval_trajectories, "held-out trajectories; all their step pairs form the evaluation set");
    v("pool_batch", pool_batch, "samples per forward while sampling the trajectories");
    v("batch_size", batch_size, "step pairs per iteration (l2c); samples per unrolled trajectory (harmonica)");
    v("iterations", iterations, "Adam steps (harmonica: one per routed step of an unroll)");
    v("lr", lr, "Adam learning rate on the logits");
    v("lambda", lambda, "weight of the mean router score in the loss");
    v("init_logit", init_logit, "initial value of every logit");
    v("clamp", clamp, "logits are clamped to [-clamp, clamp] after each step");
    v("threshold", threshold, "inference threshold for the reported skip fraction and evaluation");
    v("full_every", full_every, "as the cache's full_every: pairs are drawn only at routed steps (0 = every step >= 1)");
    v("seed", seed, "seed of the trajectories' noise and the pair draws");
    v("threads", threads, "intra-op threads");
    v("log_every", log_every, "iterations between progress lines");
    v("teacher", teacher,
      "harmonica: target of a step's output: input = the uncached output at the unroll's own sample (the paper's), "
      "trajectory = the uncached trajectory's output at that step");
    v("refresh_every", refresh_every,
      "harmonica: iterations between refreshes of the image-error proxy weights (0 = uniform weights, no proxy)");
    v("proxy_samples", proxy_samples, "harmonica: training trajectories (the first ones) the image-error proxy is measured on");
  }
  template <class C>
  void check(C& c) const {
    c.one_of("objective", objective, {"l2c", "harmonica"});
    c.one_of("teacher", teacher, {"input", "trajectory"});
    c.require(refresh_every >= 0, "refresh_every", "must be >= 0 (0 = uniform step weights)");
    c.require(proxy_samples >= 1 && (objective != "harmonica" || proxy_samples <= trajectories), "proxy_samples",
              "must be in [1, trajectories] (the proxy runs on training trajectories)");
    c.require(cfg_scale >= 0, "cfg_scale", "must be >= 0");
    c.require(trajectories >= 1, "trajectories", "must be >= 1");
    c.require(eval_trajectories >= 1, "eval_trajectories", "must be >= 1");
    c.require(pool_batch >= 1, "pool_batch", "must be >= 1");
    c.require(batch_size >= 1, "batch_size", "must be >= 1");
    c.require(iterations >= 1, "iterations", "must be >= 1");
    c.require(lr > 0, "lr", "must be > 0");
    c.require(lambda >= 0, "lambda", "must be >= 0");
    c.require(clamp > 0, "clamp", "must be > 0");
    c.require(threshold >= 0 && threshold <= 1, "threshold", "must be in [0, 1]");
    c.require(full_every >= 0 && full_every != 1, "full_every", "must be 0 or >= 2 (1 would route no step)");
    c.require(threads >= 1, "threads", "must be >= 1");
    c.require(log_every >= 1, "log_every", "must be >= 1");
    c.require(!output.empty(), "output", "must name the router file to write");
  }
};

// A router trainer component (framework/router_trainer.h): `{type: l2c, ...}` and
// `{type: harmonica, ...}` take the recipe's keys; the objective is the type, and the router
// file and loss curve are the artefact's. Guidance and threads default to the run's.
struct L2cTrainerOptions : L2cTrainOptions {
  template <class V>
  void fields(V& v) {
    recipe_fields(v);
  }
};
struct HarmonicaTrainerOptions : L2cTrainerOptions {
  HarmonicaTrainerOptions() { objective = "harmonica"; }
};
class L2cRouterTrainer final : public RouterTrainer {
 public:
  explicit L2cRouterTrainer(const L2cTrainOptions& o) : o_(o) {}
  void train(Backbone& bb, const Sampler& sampler, const std::string& output, const std::string& log,
             const std::string& recipe_yaml, const std::string& backbone_digest) const override;

 private:
  L2cTrainOptions o_;
};

// Hooks that stack site layers around every site of a backbone with autograd on (the
// runner's trajectories run in inference mode). Dense ops, no recording, no FLOPs.
class LayerHooks final : public Hooks {
 public:
  LayerHooks(const Backbone& bb, std::vector<SiteLayer*> layers);
  ~LayerHooks() override;
  void begin_run(int steps);  // binds the layers to the backbone's sites, resets them
  void begin_step(const StepIndex& step);
  Tensors at(int site, Tensors inputs, const SiteFn& compute) override;
  Ops& ops() override { return *ops_; }
  // What each site's call did in the last step (Decision as uint8; Skipped if not called).
  const std::vector<uint8_t>& decisions() const { return decisions_; }

 private:
  Tensors dispatch(size_t k, SiteCall& call, const SiteFn& compute);
  const Backbone& bb_;
  std::vector<SiteLayer*> layers_;
  std::unique_ptr<Ops> ops_;
  RunContext ctx_;
  StepIndex step_;
  std::vector<uint8_t> decisions_;
};

// Step pairs of uncached trajectories (guided with `cfg_scale`, classes j % classes).
struct L2cPairs {
  at::Tensor x;       // [T, N, ...sample] the sample entering step i
  at::Tensor target;  // [T, N, ...output] the uncached guided model output at step i
  at::Tensor labels;  // [N] int64
  at::Tensor t;       // [T] float32 model timesteps
  int steps() const { return int(x.size(0)); }
  int64_t count() const { return x.size(1); }
};
L2cPairs sample_l2c_pairs(Backbone& bb, const Sampler& sampler, const Guidance& guidance, double cfg_scale,
                          int64_t n, int64_t batch, int64_t seed);

class L2cTrainer {
 public:
  struct Loss {
    double total = 0, mse = 0, reg = 0;
  };
  // Freezes the backbone's parameters and makes the logits [T, rows, kinds] of the backbone's layout (l2c_layout; init_logit).
  // Trajectories [0, train_count) of `pairs` are drawn for training.
  L2cTrainer(Backbone& bb, const Guidance& guidance, L2cPairs pairs, int64_t train_count, const L2cTrainOptions& o);
  ~L2cTrainer();
  // The objective on pairs (trajectory traj[r], step step[r] >= 1), int64 [B] each. With
  // `backward`, gradients are accumulated into the logits (nothing is updated).
  Loss objective(const at::Tensor& traj, const at::Tensor& step, bool backward, bool hard = false);
  // One Adam step on a batch of random training pairs.
  Loss iterate(at::Generator& gen);
  // The objective over every step pair of trajectories [first, first + n), in batches.
  Loss evaluate(int64_t first, int64_t n, bool hard);
  at::Tensor& logits() { return logits_; }
  // Fraction of the router's entries at routed steps with sigmoid(logit) <= threshold.
  double skipped_fraction() const;
  const std::vector<int64_t>& routed_steps() const { return routed_; }
  const L2cPairs& pairs() const { return pairs_; }
  int64_t train_count() const { return train_count_; }
  const L2cTrainOptions& options() const { return o_; }

 private:
  Backbone& bb_;
  const Guidance& guidance_;
  L2cPairs pairs_;
  int64_t train_count_;
  L2cTrainOptions o_;
  at::Tensor logits_;  // [T, rows, kinds], requires grad
  std::vector<int64_t> routed_;  // the steps the router decides at (and is trained at)
  std::unique_ptr<L2cRouter> router_;
  std::unique_ptr<LayerHooks> hooks_;
  struct Adam;
  std::unique_ptr<Adam> adam_;
};

// `cachelab train` with `model: l2c`: samples the pairs, trains, prints progress, writes
// the router (with the recipe, its layout and the weights' digest in its metadata) and
// the loss curve. backbone_digest: file_digest of the backbone's weights ("" = none).
void train_l2c(Backbone& bb, const Sampler& sampler, const L2cTrainOptions& o, const std::string& config_yaml,
               const std::string& backbone_digest = "");

}  // namespace cachelab
