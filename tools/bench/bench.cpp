// Benchmark (not a test): measured in one process, interleaved, medians of repetitions.
//  (a) overhead of the runner with full per-step logging vs a bare LibTorch sampling loop
//  (b) FORA N = 2, 3, 4: wall-clock speedup / FLOPs speedup
//  (c) with --w8a8 CALIB: only W8A8 (calibrate to CALIB, forward time int8 / fake vs fp32, PSNR)
// usage: cachelab_bench [--reps 7] [--batch 16] [--steps 50] [--threads 1] [--w8a8 CALIB]
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "caches/fora.h"
#include "caches/none.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "tools/components.h"
#include "framework/runner.h"
#include "framework/summary.h"
#include "framework/system_info.h"
#include "framework/paths.h"
#include "models/image_pipeline.h"
#include "models/samplers.h"
#include "framework/metric.h"
#include "quant/w8a8.h"

using namespace cachelab;

namespace {
double seconds(const std::function<void()>& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
double median(std::vector<double> v) { return quantile(std::move(v), 0.5); }
// "1.234 [1.200, 1.260]": median and interquartile range.
std::string spread(const std::vector<double>& v, const char* fmt = "%.3f") {
  char a[32], b[32], c[32];
  std::snprintf(a, sizeof a, fmt, median(v));
  std::snprintf(b, sizeof b, fmt, quantile(v, 0.25));
  std::snprintf(c, sizeof c, fmt, quantile(v, 0.75));
  return std::string(a) + " [" + b + ", " + c + "]";
}
// Per-repetition ratios num[r] / den[r] of interleaved measurements.
std::vector<double> ratios(const std::vector<double>& num, const std::vector<double>& den) {
  std::vector<double> r;
  for (size_t i = 0; i < num.size(); ++i) r.push_back(num[i] / den[i]);
  return r;
}

// (c) W8A8: calibrates on one trajectory (seed 1) and writes `calib`; times one DiT
// forward at `batch` x2 (guidance) with dense fp32, int8 and fake ops, interleaved; then
// the PSNR of int8 and fake trajectories (seed 0) against the fp32 one.
int bench_w8a8(Backbone& bb, const DdimSampler& sampler, RunOptions run, int reps, const std::string& calib) {
  struct OpsHooks final : Hooks {
    Ops& o;
    explicit OpsHooks(Ops& ops) : o(ops) {}
    Tensors at(int, Tensors inputs, const SiteFn& compute) override {
      SiteCall call;
      call.inputs = std::move(inputs);
      SiteLog log;
      call.log = &log;
      return compute(call);
    }
    Ops& ops() override { return o; }
  };
  c10::InferenceMode guard;
  run.cfg_scale = 4;  // dit-mnist's quality setting
  NoCache none{NoCacheOptions{}};
  ImagePipeline pipeline{ImagePipelineOptions{}};
  CfgGuidance guidance{CfgGuidanceOptions{}};
  auto traj = [&](Ops* ops, int64_t seed) {
    RunParts parts;
    parts.backbone = &bb;
    parts.pipeline = &pipeline;
    parts.sampler = &sampler;
    parts.guidance = &guidance;
    parts.layers = {&none};
    parts.ops = ops;
    RunOptions r = run;
    r.seed = seed;
    return run_trajectory(parts, r, nullptr, nullptr);
  };
  W8A8Options fo, io;
  fo.calibration = io.calibration = calib;
  io.mode = "int8";
  W8A8Ops fake(fo);
  fake.start_calibration();
  traj(&fake, 1);
  std::printf("[bench] %s\n", fake.finish_calibration().c_str());
  W8A8Ops int8(io);
  DenseOps dense;
  for (Ops* o : {static_cast<Ops*>(&dense), static_cast<Ops*>(&int8), static_cast<Ops*>(&fake)})
    o->begin_run(bb.linears(), nullptr);

  const int64_t B = 2 * run.batch;
  auto gen = at::detail::createCPUGenerator(0);
  auto shape = bb.sample_shape();
  auto x = at::randn({B, shape[0], shape[1], shape[2]}, gen);
  auto t = at::full({B}, 500.0, at::kFloat);
  Cond cond;
  cond.labels = at::arange(B, at::kLong).remainder(bb.num_classes());
  // Times the linears inside the forward (CPU ops are synchronous).
  struct TimedOps final : Ops {
    Ops& o;
    double linear_s = 0;
    explicit TimedOps(Ops& ops) : o(ops) {}
    at::Tensor linear(int id, const at::Tensor& v) override {
      const auto t0 = std::chrono::steady_clock::now();
      auto y = o.linear(id, v);
      linear_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return y;
    }
    at::Tensor attention(const AttnCall& c, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
      return o.attention(c, q, k, v);
    }
  };
  const int per_rep = 5;
  std::vector<std::vector<double>> ms(3), lin(3);
  Ops* chain[3] = {&dense, &int8, &fake};
  for (int r = 0; r < reps + 1; ++r)
    for (int k = 0; k < 3; ++k) {
      TimedOps timed(*chain[k]);
      OpsHooks h(timed);
      const double s = seconds([&] {
        for (int i = 0; i < per_rep; ++i) bb.forward(x, t, cond, h);
      });
      if (r == 0) continue;  // repetition 0 warms up
      ms[size_t(k)].push_back(1000 * s / per_rep);
      lin[size_t(k)].push_back(1000 * timed.linear_s / per_rep);
    }
  auto rel = [](const at::Tensor& a, const at::Tensor& r) { return ((a - r).norm() / r.norm()).item<double>(); };
  OpsHooks hd(dense), hi(int8), hf(fake);
  auto yd = bb.forward(x, t, cond, hd), yi = bb.forward(x, t, cond, hi), yf = bb.forward(x, t, cond, hf);
  const double m32 = median(ms[0]), m8 = median(ms[1]), mf = median(ms[2]);
  std::printf("\n(c) W8A8 (block linears; embedders and final layer fp32), one DiT forward at batch %lld (%d x2)\n",
              (long long)B, run.batch);
  std::printf("    fp32 %.2f ms, int8 %.2f ms (%.2fx), fake %.2f ms (%.2fx)  [medians of %d x %d]\n", m32, m8,
              m32 / m8, mf, m32 / mf, reps, per_rep);
  std::printf("    of which all linears: fp32 %.2f ms, int8 %.2f ms (%.2fx), fake %.2f ms\n", median(lin[0]),
              median(lin[1]), median(lin[0]) / median(lin[1]), median(lin[2]));
  std::printf("    one forward, rel L2: fake vs fp32 %.3g, int8 vs fake %.3g\n", rel(yf, yd), rel(yi, yf));

  auto ref = traj(nullptr, 0), tf = traj(&fake, 0), ti = traj(&int8, 0);
  auto psnr = metrics().build(parse_config_string("type: psnr\n", "bench"));
  auto value = [&](const Trajectory& tr) {
    MetricInputs in;
    in.samples = tr.samples;
    in.reference = ref.samples;
    return psnr->compute(in)[0].second;
  };
  std::printf("    trajectories (%d samples, %d steps, guidance %.0f, seed 0): PSNR vs fp32: fake %.2f dB, int8 %.2f dB;"
              " int8 vs fake rel L2 %.3g\n",
              run.samples, sampler.num_steps(), run.cfg_scale, value(tf), value(ti), rel(ti.samples, tf.samples));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 7, batch = 16, steps = 50, threads = 1;
  std::string w8a8;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--w8a8")) w8a8 = argv[i + 1];
  }
  try {
    register_components();
    auto info = system_info(threads);
    std::printf("%s\n", describe(info).c_str());
    ConfigNode preset = load_config(project_root() + "/configs/backbones/dit-mnist.yaml");
    auto backbone = backbones().build(*preset.find("backbone"));
    DdimOptions so;
    so.steps = steps;
    DdimSampler sampler(so);
    RunOptions run;
    run.samples = batch;
    run.batch = batch;
    run.threads = threads;
    const double cfg = run.cfg_scale;
    std::printf("[bench] dit-mnist, %d DDIM steps, batch %d (x2 for guidance %.1f), %d thread(s), %d repetitions\n",
                steps, batch, cfg, threads, reps);
    if (!w8a8.empty()) return bench_w8a8(*backbone, sampler, run, reps, w8a8);

    c10::InferenceMode guard;
    ReferenceTrace ref;
    NoCache none{NoCacheOptions{}};
    ImagePipeline pipeline{ImagePipelineOptions{}};
    CfgGuidance guidance{CfgGuidanceOptions{}};
    auto traj = [&](SiteLayer& layer, const ReferenceTrace* r, ReferenceTrace* capture) {
      RunParts parts;
      parts.backbone = backbone.get();
      parts.pipeline = &pipeline;
      parts.sampler = &sampler;
      parts.guidance = &guidance;
      parts.layers = {&layer};
      return run_trajectory(parts, run, r, capture);
    };
    traj(none, nullptr, &ref);  // warm-up and the reference trace

    // The bare loop: same model, same sampler, no hooks, no logging.
    auto bare = [&] {
      auto gen = at::detail::createCPUGenerator(0);
      auto shape = backbone->sample_shape();
      auto x = at::randn({batch, shape[0], shape[1], shape[2]}, gen);
      auto y = at::arange(batch, at::kLong).remainder(backbone->num_classes());
      Cond y2;
      y2.labels = at::cat({y, at::full_like(y, backbone->num_classes())});
      PassThroughHooks h(backbone->linears());
      for (int i = 0; i < sampler.num_steps(); ++i) {
        auto t = at::full({2 * batch}, double(sampler.timesteps()[i]), at::kFloat);
        auto out = backbone->forward(at::cat({x, x}), t, y2, h);
        auto c = out.narrow(0, 0, batch), u = out.narrow(0, batch, batch);
        x = sampler.step(i, x, u + cfg * (c - u), at::Tensor());
      }
      return x;
    };
    std::vector<double> t_bare, t_logged, s_logged;
    std::vector<std::vector<double>> t_fora(3), s_fora(3);  // stopwatch / the runner's step timer
    double flops_ref = 0, flops_fora[3] = {0, 0, 0};
    for (int r = 0; r < reps; ++r) {
      t_bare.push_back(seconds([&] { bare(); }));
      t_logged.push_back(seconds([&] {
        auto t = traj(none, &ref, nullptr);
        flops_ref = t.flops;
        s_logged.push_back(t.wall_s);
      }));
      for (int k = 0; k < 3; ++k) {
        ForaOptions fo;
        fo.interval = k + 2;
        ForaPolicy fora(fo);
        t_fora[k].push_back(seconds([&] {
          auto t = traj(fora, &ref, nullptr);
          flops_fora[k] = t.flops;
          s_fora[k].push_back(t.wall_s);
        }));
      }
      std::printf("[bench] repetition %d/%d: bare %.3fs, logged %.3fs\n", r + 1, reps, t_bare.back(), t_logged.back());
      std::fflush(stdout);
    }
    // Medians with interquartile ranges; ratios are taken per repetition (the runs of one
    // repetition are adjacent in time), then summarised.
    std::printf("\n(a) runner overhead (uncached, full per-step logging and site layers) vs bare loop\n");
    std::printf("    bare %s s, runner %s s\n", spread(t_bare).c_str(), spread(t_logged).c_str());
    std::vector<double> over;
    for (double r : ratios(t_logged, t_bare)) over.push_back(100 * (r - 1));
    std::printf("    overhead per repetition: %s %% (target <= 3%%)\n", spread(over, "%+.1f").c_str());
    std::printf("\n(b) FORA at batch %d: wall-clock speedup vs FLOPs speedup (reference = runner, uncached)\n", batch);
    std::printf("    steps: the runner's step timer (what speedup_wall reports; the recorder's statistics\n"
                "    run after each step's timer stops); whole: a stopwatch around the trajectory\n");
    std::printf("    %-8s %10s %22s %22s %22s\n", "interval", "FLOPs x", "wall x, steps [IQR]", "wall/FLOPs, steps",
                "wall/FLOPs, whole");
    for (int k = 0; k < 3; ++k) {
      const double sf = flops_ref / flops_fora[k];
      auto sw = ratios(s_logged, s_fora[k]), tw = ratios(t_logged, t_fora[k]);
      std::vector<double> eff, eff_whole;
      for (double w : sw) eff.push_back(w / sf);
      for (double w : tw) eff_whole.push_back(w / sf);
      std::printf("    N=%-6d %10.2f %22s %22s %22s (target >= 0.9)\n", k + 2, sf, spread(sw, "%.2f").c_str(),
                  spread(eff, "%.2f").c_str(), spread(eff_whole, "%.2f").c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
