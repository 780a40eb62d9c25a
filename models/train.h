// Training of the bundled diffusion backbones (DDPM epsilon or rectified-flow objective), resumable.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/dit.h"
#include "models/unet.h"

namespace cachelab {

struct TrainOptions {
  int steps = 20000;              // optimiser steps in total (a resumed run continues to this)
  int batch_size = 128;
  double lr = 1e-3;               // AdamW peak learning rate
  int warmup = 500;               // linear warm-up steps
  std::vector<int> decay_steps;   // the learning rate is multiplied by decay_factor at each
  double decay_factor = 0.3;
  double weight_decay = 0.0;
  double grad_clip = 1.0;         // max global gradient norm (0 = off)
  double ema_decay = 0.999;       // warmed up as min(decay, (1+s)/(10+s))
  int64_t seed = 0;
  int threads = 1;
  std::string dataset = "mnist";  // mnist | fashion-mnist (train split, padded to input_size)
  int checkpoint_every = 250;     // steps between checkpoints (and weight exports)
  int log_every = 25;             // steps between progress lines
  std::string checkpoint_dir = "checkpoints/dit-mnist";  // relative to the project root
  std::string output = "models/weights/dit-mnist.safetensors";  // EMA weights, exported at every checkpoint
  // eps: DDPM epsilon MSE over the 1000-step linear schedule (model timestep = integer t).
  // flow: rectified flow, t ~ U[0, 1], x_t = (1 - t) x0 + t noise, target v = noise - x0,
  // model timestep = t x time_scale (a float), as euler_flow / heun_flow sample it.
  std::string objective = "eps";
  int time_scale = 1000;
  std::string init_from;  // weights a new run starts from (same architecture); empty = random init
  template <class V>
  void fields(V& v) {
    run_fields(v, "images per step", "seed of data order, timesteps and noise");
    v("dataset", dataset, "mnist | fashion-mnist (train split)");
    objective_fields(v, "eps (DDPM epsilon MSE) | flow (rectified flow: velocity noise - x0 at t ~ U[0,1])");
  }
  // The keys every trainer shares (a trainer's own options struct lists these, then its own).
  template <class V>
  void run_fields(V& v, const char* batch_doc, const char* seed_doc) {
    v("steps", steps, "optimiser steps in total; a resumed run continues to this");
    v("batch_size", batch_size, batch_doc);
    v("lr", lr, "AdamW peak learning rate");
    v("warmup", warmup, "linear learning-rate warm-up, steps");
    v("decay_steps", decay_steps, "steps at which the learning rate is multiplied by decay_factor");
    v("decay_factor", decay_factor, "learning-rate factor applied at each of decay_steps");
    v("weight_decay", weight_decay, "AdamW weight decay");
    v("grad_clip", grad_clip, "max global gradient norm (0 = off)");
    v("ema_decay", ema_decay, "EMA decay, warmed up as min(decay, (1+s)/(10+s))");
    v("seed", seed, seed_doc);
    v("threads", threads, "intra-op threads");
    v("checkpoint_every", checkpoint_every, "steps between checkpoints and weight exports");
    v("log_every", log_every, "steps between progress lines");
    v("checkpoint_dir", checkpoint_dir, "resumable state (relative to the project root)");
    v("output", output, "EMA weights file written at every checkpoint (relative to the project root)");
    v("init_from", init_from, "weights a new run starts from (same architecture; empty = random init)");
  }
  template <class V>
  void objective_fields(V& v, const char* objective_doc) {
    v("objective", objective, objective_doc);
    v("time_scale", time_scale, "flow: model timestep = t x time_scale (match the flow sampler's time_scale)");
  }
  template <class C>
  void run_check(C& c) const {
    c.require(steps >= 1, "steps", "must be >= 1");
    c.require(batch_size >= 1, "batch_size", "must be >= 1");
    c.require(lr > 0, "lr", "must be > 0");
    c.require(checkpoint_every >= 1, "checkpoint_every", "must be >= 1");
    c.require(log_every >= 1, "log_every", "must be >= 1");
  }
};

// The resumable plumbing every trainer shares: the parameters and their EMA copy, AdamW,
// the checkpoints in checkpoint_dir (model, ema, optimizer: resumed when present; else the
// exported weights' step is continued; else init_from), the learning-rate schedule
// (warm-up, decays), gradient clipping, progress lines, the loss curve (<checkpoint_dir>/
// loss.csv -> train_log.h5) and SIGINT / SIGTERM handling. A trainer's step:
//   const double lr = run.begin_step();  // sets lr, zeroes the gradients
//   ... loss.backward() ...
//   run.end_step(loss_value, lr);         // clip, AdamW step, EMA, log, checkpoint
class TrainRun {
 public:
  // Sets the threads and the seed, resumes, prints the opening lines: `summary` describes
  // the model; `objective` is named on the progress line; `objective_description` goes to
  // train_log.h5. `format` is the exported weights' metadata `format`.
  TrainRun(Backbone& model, const TrainOptions& o, const std::string& format, const std::string& summary,
           const std::string& objective, const std::string& objective_description, const std::string& config_yaml);
  ~TrainRun();
  int step() const;
  // True (and says so) when the run is already at o.steps.
  bool finished() const;
  // Opens the loss log and starts the clock (call once, before the first step).
  void start();
  double begin_step();
  void end_step(double loss, double lr);
  const std::string& output() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Trains (or resumes) a class-conditional image backbone on the DDPM objective with label
// dropout `class_dropout_prob` (the null label is num_classes()); prints progress; writes
// checkpoints, the EMA weights (metadata: step, format, config_yaml) and the loss curve
// (<checkpoint_dir>/loss.csv and train_log.h5). `model` must be freshly initialised
// (random weights); `summary` is the progress line's description of it.
void train_diffusion(Backbone& model, double class_dropout_prob, const std::string& format,
                     const std::string& summary, const TrainOptions& train, const std::string& config_yaml);

// The bundled backbones' trainers (random init, then train_diffusion).
void train_dit(const DitOptions& model, const TrainOptions& train, const std::string& config_yaml);
void train_unet(const UnetOptions& model, const TrainOptions& train, const std::string& config_yaml);

}  // namespace cachelab
