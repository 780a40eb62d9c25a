#include "framework/runner.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/serialize.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <unistd.h>

#include "framework/error.h"
#include "metrics/functional.h"

namespace cachelab {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct ProbeSums {
  double l1 = 0, sq = 0, dot = 0, dist_prev = 0, dist_ref = 0, ref_l1 = 0;
};

// Sums over a probe in float blocks of 256 (vectorisable), accumulated in double.
template <bool kPrev, bool kRef>
ProbeSums probe_sums(const float* a, const float* b, const float* r, int64_t n) {
  ProbeSums s;
  constexpr int64_t kBlock = 256;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    float l1 = 0, sq = 0, dot = 0, dp = 0, dr = 0, rl = 0;
    for (int64_t i = i0; i < i1; ++i) {
      const float v = a[i];
      l1 += std::fabs(v);
      sq += v * v;
      if constexpr (kPrev) dot += v * b[i], dp += std::fabs(v - b[i]);
      if constexpr (kRef) dr += std::fabs(v - r[i]), rl += std::fabs(r[i]);
    }
    s.l1 += l1, s.sq += sq, s.dot += dot, s.dist_prev += dp, s.dist_ref += dr, s.ref_l1 += rl;
  }
  return s;
}

// The runner's hooks: ask the policy, compute or stand in, count FLOPs, record the site.
class RecordingHooks final : public SiteHooks {
 public:
  RecordingHooks(const std::vector<Site>& sites, CachePolicy& policy, int probe)
      : sites_(sites), policy_(policy), probe_(probe), prev_(sites.size()) {}

  void begin_step(StepRecord* rec, const std::vector<at::Tensor>* ref_probe, std::vector<at::Tensor>* capture) {
    rec_ = rec;
    ref_probe_ = ref_probe;
    capture_ = capture;
    flops_ = 0;
  }
  double flops() const { return flops_; }

  at::Tensor at(int site, const at::Tensor& input, const SiteFn& compute) override {
    double signal = kNaN;
    const Decision d = policy_.decide(site, input, &signal);
    at::Tensor out;
    if (d == Decision::Compute) {
      out = compute(input);
      policy_.observe(site, input, out);
      flops_ += sites_[site].flops_per_sample * double(input.size(0));
    } else {
      out = policy_.stand_in(site, input);
    }
    if (rec_) record(site, d, signal, out);
    return out;
  }

 private:
  // Drift and error on the probe samples in one plain loop over the floats: per site and
  // step this replaces a dozen small LibTorch reductions (whose dispatch cost, not their
  // arithmetic, dominated the logging overhead).
  void record(int site, Decision d, double signal, const at::Tensor& out) {
    rec_->decision[site] = uint8_t(d);
    rec_->signal[site] = signal;
    auto p = out.narrow(0, 0, std::min<int64_t>(probe_, out.size(0))).contiguous();
    Probe& prev = prev_[site];
    const bool has_prev = prev.x.defined() && prev.x.sizes() == p.sizes();
    const at::Tensor* ref = ref_probe_ && (*ref_probe_)[site].defined() ? &(*ref_probe_)[site] : nullptr;
    const float* a = p.data_ptr<float>();
    const float* b = has_prev ? prev.x.data_ptr<float>() : nullptr;
    const float* r = ref ? ref->data_ptr<float>() : nullptr;
    ProbeSums sums;
    if (b && r) sums = probe_sums<true, true>(a, b, r, p.numel());
    else if (b) sums = probe_sums<true, false>(a, b, r, p.numel());
    else if (r) sums = probe_sums<false, true>(a, b, r, p.numel());
    else sums = probe_sums<false, false>(a, b, r, p.numel());
    const double l1 = sums.l1, sq = sums.sq, dot = sums.dot, dist_prev = sums.dist_prev, dist_ref = sums.dist_ref,
                 ref_l1 = sums.ref_l1;
    if (b) {
      rec_->drift_cos[site] = prev.sq > 0 && sq > 0 ? dot / std::sqrt(sq * prev.sq) : kNaN;
      rec_->drift_rel_l1[site] = ratio(dist_prev, prev.l1);
    }
    if (r) rec_->err_ref[site] = ratio(dist_ref, ref_l1);
    if (capture_) (*capture_)[site] = p.clone();
    prev = {p, l1, sq};  // a view: outputs are never written in place
  }
  static double ratio(double num, double den) {
    return den > 0 ? num / den : (num > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  }
  struct Probe {
    at::Tensor x;
    double l1 = 0, sq = 0;
  };

  const std::vector<Site>& sites_;
  CachePolicy& policy_;
  int probe_;
  std::vector<Probe> prev_;  // probe of each site's output at its last visited step
  StepRecord* rec_ = nullptr;
  const std::vector<at::Tensor>* ref_probe_ = nullptr;
  std::vector<at::Tensor>* capture_ = nullptr;
  double flops_ = 0;
};

StepRecord empty_record(size_t P) {
  StepRecord r;
  r.decision.assign(P, uint8_t(Decision::Skipped));
  r.signal.assign(P, kNaN);
  r.drift_cos.assign(P, kNaN);
  r.drift_rel_l1.assign(P, kNaN);
  r.err_ref.assign(P, kNaN);
  r.err_ref_rel_l1 = kNaN;
  return r;
}

// One denoiser evaluation with classifier-free guidance: the conditional and the
// null-label halves run as one batch through the hooks.
at::Tensor guided(Backbone& bb, const at::Tensor& x, int64_t t, const at::Tensor& y, double scale, SiteHooks& hooks) {
  const int64_t B = x.size(0), C = x.size(1);
  if (scale == 1.0) return bb.forward(x, at::full({B}, double(t), at::kFloat), y, hooks);
  auto out = bb.forward(at::cat({x, x}), at::full({2 * B}, double(t), at::kFloat),
                        at::cat({y, at::full_like(y, bb.num_classes())}), hooks);
  auto cond = out.narrow(0, 0, B), uncond = out.narrow(0, B, B);
  auto eps = uncond.narrow(1, 0, C) + scale * (cond.narrow(1, 0, C) - uncond.narrow(1, 0, C));
  return out.size(1) > C ? at::cat({eps, cond.narrow(1, C, out.size(1) - C)}, 1) : eps;
}

}  // namespace

at::Tensor sample_labels(int n, int num_classes) { return at::arange(n, at::kLong).remainder(num_classes); }

Trajectory run_trajectory(Backbone& backbone, const Sampler& sampler, CachePolicy& policy, const RunOptions& run,
                          const ReferenceTrace* ref, ReferenceTrace* capture) {
  CL_CHECK(run.samples >= 1 && run.batch >= 1, "run.samples and run.batch must be >= 1");
  c10::InferenceMode guard;
  const auto& sites = backbone.sites();
  const int T = sampler.num_steps();
  const auto shape = backbone.sample_shape();
  Trajectory traj;
  traj.labels = sample_labels(run.samples, backbone.num_classes());
  std::vector<at::Tensor> outs;
  if (capture) {
    capture->x_after_step.assign(T, at::Tensor());
    capture->probe.assign(T, std::vector<at::Tensor>(sites.size()));
  }
  traj.steps.assign(T, empty_record(sites.size()));
  for (int i = 0; i < T; ++i) traj.steps[i].t = sampler.timesteps()[i];

  for (int b0 = 0, bi = 0; b0 < run.samples; b0 += run.batch, ++bi) {
    const int B = std::min(run.batch, run.samples - b0);
    auto gen = at::detail::createCPUGenerator(uint64_t(run.seed) * 1000003ull + uint64_t(bi));
    auto x = at::randn({B, shape[0], shape[1], shape[2]}, gen);
    auto y = traj.labels.narrow(0, b0, B);
    const bool first = bi == 0;
    RecordingHooks hooks(sites, policy, run.probe_samples);
    policy.begin_run(sites, T);
    for (int i = 0; i < T; ++i) {
      const auto start = std::chrono::steady_clock::now();
      StepRecord* rec = first ? &traj.steps[i] : nullptr;
      hooks.begin_step(rec, first && ref ? &ref->probe[i] : nullptr, first && capture ? &capture->probe[i] : nullptr);
      policy.begin_step({i, T, sampler.timesteps()[i]});
      auto model_out = guided(backbone, x, sampler.timesteps()[i], y, run.cfg_scale, hooks);
      at::Tensor noise;
      if (sampler.needs_noise()) noise = at::randn(x.sizes(), gen);
      x = sampler.step(i, x, model_out, noise);
      policy.end_step();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      traj.steps[i].wall_ms += ms;
      traj.steps[i].flops += hooks.flops();
      traj.wall_s += ms / 1000;
      traj.flops += hooks.flops();
      if (!at::isfinite(x).all().item<bool>()) {
        traj.failed_step = i;
        traj.error = "non-finite values (NaN or inf) in the sample after step " + std::to_string(i) +
                     " (timestep " + std::to_string(sampler.timesteps()[i]) + ", batch " + std::to_string(bi) + ")";
        return traj;
      }
      if (first && ref) traj.steps[i].err_ref_rel_l1 = rel_l1(x, ref->x_after_step[i]);
      if (first && capture) capture->x_after_step[i] = x.clone();
    }
    outs.push_back(x);
  }
  traj.samples = at::cat(outs);
  if (capture) {
    capture->samples = traj.samples;
    capture->wall_s = traj.wall_s;
    capture->flops = traj.flops;
  }
  return traj;
}

void save_reference(const ReferenceTrace& trace, const std::string& path) {
  std::vector<at::Tensor> flat;
  flat.push_back(trace.samples);
  flat.push_back(at::tensor({trace.wall_s, trace.flops}, at::kDouble));
  flat.push_back(at::tensor({int64_t(trace.x_after_step.size()),
                             int64_t(trace.probe.empty() ? 0 : trace.probe[0].size())}, at::kLong));
  for (auto& x : trace.x_after_step) flat.push_back(x);
  for (auto& row : trace.probe)
    for (auto& p : row) flat.push_back(p.defined() ? p : at::empty({0}));
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  // A unique temporary name: parallel tasks (a Slurm array) may save the same reference.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  torch::save(flat, tmp);
  std::filesystem::rename(tmp, path);
}

bool load_reference(ReferenceTrace& trace, const std::string& path) {
  if (!std::filesystem::exists(path)) return false;
  std::vector<at::Tensor> flat;
  try {
    torch::load(flat, path);
  } catch (const std::exception&) {
    return false;
  }
  if (flat.size() < 3) return false;
  trace.samples = flat[0];
  trace.wall_s = flat[1][0].item<double>();
  trace.flops = flat[1][1].item<double>();
  const int64_t T = flat[2][0].item<int64_t>(), P = flat[2][1].item<int64_t>();
  if (int64_t(flat.size()) != 3 + T + T * P) return false;
  size_t k = 3;
  trace.x_after_step.assign(flat.begin() + 3, flat.begin() + 3 + T);
  k += T;
  trace.probe.assign(T, std::vector<at::Tensor>(P));
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < P; ++j, ++k)
      if (flat[k].numel() > 0) trace.probe[i][j] = flat[k];
  return true;
}

}  // namespace cachelab
