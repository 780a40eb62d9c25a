// Benchmark (not a test): measured in one process, interleaved, medians of repetitions.
//  (a) overhead of the runner with full per-step logging vs a bare LibTorch sampling loop
//  (b) FORA N = 2, 3, 4: wall-clock speedup / FLOPs speedup
// usage: cachelab_bench [--reps 7] [--batch 16] [--steps 50] [--threads 1]
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
#include "framework/system_info.h"
#include "framework/paths.h"
#include "models/image_pipeline.h"
#include "models/samplers.h"

using namespace cachelab;

namespace {
double seconds(const std::function<void()>& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
}  // namespace

int main(int argc, char** argv) {
  int reps = 7, batch = 16, steps = 50, threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
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
    std::vector<double> t_bare, t_logged;
    std::vector<std::vector<double>> t_fora(3);
    double flops_ref = 0, flops_fora[3] = {0, 0, 0};
    for (int r = 0; r < reps; ++r) {
      t_bare.push_back(seconds([&] { bare(); }));
      t_logged.push_back(seconds([&] { flops_ref = traj(none, &ref, nullptr).flops; }));
      for (int k = 0; k < 3; ++k) {
        ForaOptions fo;
        fo.interval = k + 2;
        ForaPolicy fora(fo);
        t_fora[k].push_back(seconds([&] { flops_fora[k] = traj(fora, &ref, nullptr).flops; }));
      }
      std::printf("[bench] repetition %d/%d: bare %.3fs, logged %.3fs\n", r + 1, reps, t_bare.back(), t_logged.back());
      std::fflush(stdout);
    }
    const double mb = median(t_bare), ml = median(t_logged);
    std::printf("\n(a) runner overhead (uncached, full per-step logging) vs bare loop\n");
    std::printf("    bare %.3f s, runner %.3f s (medians): overhead %+.1f%% (target <= 5%%)\n", mb, ml,
                100 * (ml / mb - 1));
    std::printf("\n(b) FORA at batch %d: wall-clock speedup vs FLOPs speedup (reference = runner, uncached)\n", batch);
    std::printf("    %-8s %12s %12s %14s\n", "interval", "wall x", "FLOPs x", "wall / FLOPs");
    for (int k = 0; k < 3; ++k) {
      const double sw = ml / median(t_fora[k]), sf = flops_ref / flops_fora[k];
      std::printf("    N=%-6d %12.2f %12.2f %14.2f (target >= 0.85)\n", k + 2, sw, sf, sw / sf);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
