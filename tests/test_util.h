// Helpers shared by the test suites: temp folders, tiny random models, error checks.
#pragma once
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "framework/error.h"
#include "framework/runner.h"
#include "models/dit.h"
#include "models/samplers.h"
#include "models/image_pipeline.h"
#include "models/unet.h"

namespace cachelab::testing {

// A fresh folder under the system temp dir, removed at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    path = (std::filesystem::temp_directory_path() / ("cachelab_test_" + std::to_string(::getpid()) + "_" +
                                                      std::to_string(counter()++)))
               .string();
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name, const std::string& text = "") const {
    std::string p = path + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(p).parent_path());
    if (!text.empty()) std::ofstream(p) << text;
    return p;
  }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

// A small DiT whose weights are all random (the adaLN-Zero init would make every block
// an identity map, hiding what caches do).
inline DitOptions tiny_dit_options() {
  DitOptions o;
  o.input_size = 8;
  o.patch_size = 2;
  o.hidden_size = 32;
  o.depth = 4;
  o.num_heads = 2;
  return o;
}
// A small U-Net: 8x8 images, widths 8, 16, 16 at 8, 4, 2 pixels (two branch sites).
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// DDIM over `steps` evenly spaced timesteps, the other options at their defaults.
inline DdimOptions ddim_options(int steps) {
  DdimOptions o;
  o.steps = steps;
  return o;
}
inline UnetOptions tiny_unet_options() {
  UnetOptions o;
  o.input_size = 8;
  o.channels = 8;
  o.channel_mult = {1, 2, 2};
  o.groups = 4;
  o.attention_heads = 2;
  o.emb_dim = 16;
  return o;
}
inline void randomize(Backbone& b, uint64_t seed = 1, double std = 0.08) {
  c10::InferenceMode g;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& [name, t] : b.named_tensors())
    if (name != "pos_embed") t.normal_(0, std, gen);
}

// A class-label condition.
inline Cond labels(const at::Tensor& y) {
  Cond c;
  c.labels = y;
  return c;
}

// Runs the image pipeline with classifier-free guidance (eps channels) under `layers`.
inline Trajectory run_image(Backbone& bb, const Sampler& sampler, std::vector<SiteLayer*> layers,
                            const RunOptions& run, const ReferenceTrace* ref, ReferenceTrace* capture,
                            Ops* ops = nullptr) {
  static ImagePipeline pipeline{ImagePipelineOptions{}};
  static CfgGuidance guidance{CfgGuidanceOptions{}};
  RunParts parts;
  parts.backbone = &bb;
  parts.pipeline = &pipeline;
  parts.sampler = &sampler;
  parts.guidance = &guidance;
  parts.layers = std::move(layers);
  parts.ops = ops;
  return run_trajectory(parts, run, ref, capture);
}

// Runs `f`, expects a cachelab::Error whose message contains every one of `parts`.
template <class F>
void check_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (auto& p : parts) BOOST_CHECK_MESSAGE(msg.find(p) != std::string::npos, "missing `" << p << "` in: " << msg);
    return;
  }
  BOOST_ERROR("expected a cachelab::Error containing `" << *parts.begin() << "`");
}

}  // namespace cachelab::testing
