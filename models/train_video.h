// Training of the bundled AR video model (tiny_video) on Moving MNIST by teacher forcing,
// resumable (TrainRun in models/train.h).
//
// A training clip of clip_frames frames is drawn from the Moving MNIST train split; its first
// context_frames frames are the conditioning (never noised); every later chunk gets its own
// noise level and noise, and sees the clean chunks before it (TinyVideo::teacher_forcing), as
// the `video` pipeline shows it the finished chunks at inference. Objectives, per chunk:
//   flow  rectified flow (the default; Self Forcing's Wan backbone is a flow model):
//         t ~ U[0, 1], x_t = (1 - t) x0 + t noise, the model (timestep t x time_scale)
//         predicts the velocity noise - x0; sample with euler_flow.
//   eps   DDPM epsilon MSE on the 1000-step linear schedule, t ~ U{0 .. 999}. At few DDIM
//         steps an epsilon model must read the next frame out of a nearly pure-noise input
//         (x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar), abar ~ 3e-4 at t = 900), where a
//         small epsilon error is a large frame error; the velocity target asks for it directly.
// The loss is the mean over the noisy frames' pixels.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>

#include "models/moving_mnist.h"
#include "models/tiny_video.h"
#include "models/train.h"

namespace cachelab {

struct VideoTrainOptions : TrainOptions {
  MovingMnistOptions data;
  int clip_frames = 8;     // frames per training clip
  int context_frames = 2;  // leading frames given clean (the conditioning)
  VideoTrainOptions() {
    steps = 3500;
    batch_size = 16;
    lr = 1e-3;
    warmup = 200;
    objective = "flow";
    checkpoint_dir = "checkpoints/video-mnist";
    output = "models/weights/video-mnist.safetensors";
  }
  template <class V>
  void fields(V& v) {
    run_fields(v, "clips per step", "seed of the clips' noise levels and noise (the clips come from data_seed)");
    objective_fields(v, "flow (rectified flow, velocity; sample with euler_flow) | eps (DDPM epsilon; ddim)");
    data.fields(v);  // canvas, digit_size, num_digits, speed, data_seed (models/moving_mnist.h)
    v("clip_frames", clip_frames, "frames per training clip");
    v("context_frames", context_frames, "leading frames of a clip given clean (the conditioning)");
  }
  template <class C>
  void check(C& c) const {
    run_check(c);
    c.one_of("objective", objective, {"flow", "eps"});
    c.require(time_scale >= 1, "time_scale", "must be >= 1");
    c.require(clip_frames >= 2, "clip_frames", "must be >= 2");
    c.require(context_frames >= 0 && context_frames < clip_frames, "context_frames", "must be in [0, clip_frames)");
    data.check(c);
  }
};

// Per-sample teacher-forcing losses [B] (differentiable) of clean clips [B, F, C, H, W] in
// [-1, 1] under `objective` (flow | eps; time_scale for flow): noise levels and noise drawn from `gen`.
at::Tensor video_loss(TinyVideo& model, const at::Tensor& clips, int64_t context_frames, const std::string& objective,
                      int time_scale, at::Generator gen);

// Trains (or resumes) `model` (freshly initialised) on Moving MNIST; prints progress; writes
// checkpoints, the EMA weights and the loss curve, as train_diffusion does.
void train_video(TinyVideo& model, const VideoTrainOptions& o, const std::string& config_yaml);

}  // namespace cachelab
