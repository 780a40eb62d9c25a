#include "models/train_video.h"

#include <ATen/ATen.h>

#include <cstdio>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/sampler.h"

namespace cachelab {

at::Tensor video_loss(TinyVideo& model, const at::Tensor& clips, int64_t context_frames, const std::string& objective,
                      int time_scale, at::Generator gen) {
  const int64_t c = model.options().chunk_frames, B = clips.size(0), F = clips.size(1);
  CL_CHECK(clips.dim() == 5 && F % c == 0 && context_frames % c == 0,
           "video_loss: clips [B, F, C, H, W] of whole chunks (" << c << " frames) and a context of whole chunks");
  CL_CHECK(objective == "flow" || objective == "eps", "video_loss: objective must be flow or eps, got `" << objective << "`");
  static const NoiseSchedule sched = NoiseSchedule::linear();
  const int64_t U = F / c, O = F - context_frames;
  auto noise = at::randn(clips.sizes(), gen);
  at::Tensor noisy, model_t, target;
  if (objective == "flow") {
    auto t = at::rand({B, U}, gen);
    auto tf = t.repeat_interleave(c, 1).view({B, F, 1, 1, 1});
    noisy = (1 - tf) * clips + tf * noise;
    model_t = t * double(time_scale);
    target = noise - clips;
  } else {
    auto t = at::randint(sched.num_train_steps, {B, U}, gen, at::kLong);
    auto flat = [&](const at::Tensor& v) { return v.reshape({B * F, clips.size(2), clips.size(3), clips.size(4)}); };
    noisy = sched.q_sample(flat(clips), t.repeat_interleave(c, 1).reshape({-1}), flat(noise)).reshape(clips.sizes());
    model_t = t.to(at::kFloat);
    target = noise;
  }
  auto pred = model.teacher_forcing(clips, noisy, model_t, context_frames);
  auto err = (pred - target.narrow(1, context_frames, O)).pow(2);
  return err.reshape({B, -1}).mean(1);
}

void train_video(TinyVideo& model, const VideoTrainOptions& o, const std::string& config_yaml) {
  const auto& mo = model.options();
  CL_CHECK(mo.channels == 1 && mo.frame_size == o.data.canvas,
           "train.canvas " << o.data.canvas << " must equal the backbone's frame_size " << mo.frame_size
                           << " (and the backbone have 1 channel)");
  CL_CHECK(o.clip_frames % mo.chunk_frames == 0 && o.context_frames % mo.chunk_frames == 0,
           "train.clip_frames (" << o.clip_frames << ") and train.context_frames (" << o.context_frames
                                 << ") must be multiples of the backbone's chunk_frames " << mo.chunk_frames);
  CL_CHECK(o.clip_frames <= mo.max_frames,
           "train.clip_frames " << o.clip_frames << " exceeds the backbone's max_frames " << mo.max_frames);
  char summary[240];
  std::snprintf(summary, sizeof summary,
                "AR video transformer: %lld parameters, %d-frame chunks, %s frame positions; Moving MNIST %dx%d, "
                "%d digit(s) of %d px at %.1f px/frame, clips of %d frames (%d given)",
                (long long)model.num_parameters(), mo.chunk_frames, mo.frame_position.c_str(), o.data.canvas,
                o.data.canvas, o.data.num_digits, o.data.digit_size, o.data.speed, o.clip_frames, o.context_frames);
  const bool flow = o.objective == "flow";
  TrainRun run(model, o, "cachelab video", summary, flow ? "teacher-forcing-flow" : "teacher-forcing-eps",
               std::string(flow ? "rectified-flow velocity MSE" : "DDPM epsilon MSE") +
                   " per chunk, teacher forcing: each noisy chunk sees the clean chunks before it",
               config_yaml);
  if (run.finished()) return;
  const MovingMnist data(o.data, default_data_dir(), "train");
  auto gen = at::detail::createCPUGenerator(uint64_t(o.seed) * 1000003ull + uint64_t(run.step()));
  run.start();
  while (run.step() < o.steps) {
    // Clip indices step x batch + j: every step new videos, a resumed run continues the stream.
    const auto clips = data.videos(int64_t(run.step()) * o.batch_size, o.batch_size, o.clip_frames).frames;
    const double lr = run.begin_step();
    auto loss = video_loss(model, clips, o.context_frames, o.objective, o.time_scale, gen).mean();
    loss.backward();
    run.end_step(loss.item<double>(), lr);
  }
  std::printf("[train] done: %d steps; EMA weights in %s\n", run.step(), run.output().c_str());
}

}  // namespace cachelab
