#include "framework/runner.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fcntl.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <ostream>
#include <streambuf>

#include "framework/error.h"
#include "framework/interrupt.h"
#include "framework/lock.h"
#include "framework/paths.h"

namespace cachelab {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct ProbeSums {
  double l1 = 0, sq = 0, dot = 0, dist_prev = 0, dist_ref = 0, ref_l1 = 0;
};

// Sums over a probe in float blocks of 256, accumulated in double. Each block sums into
// kLanes independent partial sums, so the compiler vectorises the loop without
// reassociating (a single float accumulator would force a serial chain).
template <bool kPrev, bool kRef>
ProbeSums probe_sums(const float* a, const float* b, const float* r, int64_t n) {
  constexpr int64_t kBlock = 256, kLanes = 8;
  ProbeSums s;
  auto fold = [](const float* x) {
    double t = 0;
    for (int64_t j = 0; j < kLanes; ++j) t += x[j];
    return t;
  };
  int64_t i0 = 0;
  for (; i0 + kBlock <= n; i0 += kBlock) {
    float l1[kLanes] = {}, sq[kLanes] = {}, dot[kLanes] = {}, dp[kLanes] = {}, dr[kLanes] = {}, rl[kLanes] = {};
    for (int64_t i = i0; i < i0 + kBlock; i += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) {
        const float v = a[i + j];
        l1[j] += std::fabs(v);
        sq[j] += v * v;
        if constexpr (kPrev) dot[j] += v * b[i + j], dp[j] += std::fabs(v - b[i + j]);
        if constexpr (kRef) dr[j] += std::fabs(v - r[i + j]), rl[j] += std::fabs(r[i + j]);
      }
    s.l1 += fold(l1), s.sq += fold(sq), s.dot += fold(dot), s.dist_prev += fold(dp), s.dist_ref += fold(dr),
        s.ref_l1 += fold(rl);
  }
  for (int64_t i = i0; i < n; ++i) {  // the tail
    const double v = a[i];
    s.l1 += std::fabs(v), s.sq += v * v;
    if constexpr (kPrev) s.dot += v * b[i], s.dist_prev += std::fabs(v - b[i]);
    if constexpr (kRef) s.dist_ref += std::fabs(v - r[i]), s.ref_l1 += std::fabs(r[i]);
  }
  return s;
}

// The same sums on any device and dtype: reductions stay on the device, one small
// tensor of scalars is copied back.
ProbeSums probe_sums_device(const at::Tensor& a, const at::Tensor* b, const at::Tensor* r) {
  auto af = a.to(at::kFloat);
  std::vector<at::Tensor> parts = {af.abs().sum(), (af * af).sum()};
  if (b) {
    auto bf = b->to(at::kFloat);
    parts.push_back((af * bf).sum());
    parts.push_back((af - bf).abs().sum());
  }
  if (r) {
    auto rf = r->to(af.device()).to(at::kFloat);
    parts.push_back((af - rf).abs().sum());
    parts.push_back(rf.abs().sum());
  }
  auto v = at::stack(parts).to(at::kDouble).cpu();
  const double* p = v.data_ptr<double>();
  ProbeSums s;
  s.l1 = p[0], s.sq = p[1];
  size_t k = 2;
  if (b) s.dot = p[k], s.dist_prev = p[k + 1], k += 2;
  if (r) s.dist_ref = p[k], s.ref_l1 = p[k + 1];
  return s;
}

double ratio(double num, double den) {
  return den > 0 ? num / den : (num > 0 ? std::numeric_limits<double>::infinity() : 0.0);
}

double rel_l1_any(const at::Tensor& x, const at::Tensor& ref) {
  auto a = x.to(at::kDouble).cpu(), b = ref.to(at::kDouble).cpu();
  return ratio((a - b).abs().sum().item<double>(), b.abs().sum().item<double>());
}

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

// The most the reference's site outputs (its probe samples, every site and step, float32) may
// take in memory; beyond it none are kept. 4 GiB, or CACHELAB_MAX_PROBE_BYTES.
int64_t max_probe_capture_bytes() {
  const char* env = std::getenv("CACHELAB_MAX_PROBE_BYTES");
  return env && *env ? std::max<int64_t>(0, std::atoll(env)) : int64_t(4) << 30;
}

// The runner's hooks and step driver: stacks the layers around every site, counts the
// FLOPs of what really ran, records decisions, drift and error on the probe samples.

class Driver final : public Hooks, public StepDriver {
 public:
  Driver(const RunParts& parts, const RunOptions& run, Ops& ops, int64_t batch_index)
      : parts_(parts), run_(run), ops_(ops), sites_(parts.backbone->sites()), prev_(sites_.size()),
        decisions_(sites_.size(), uint8_t(Decision::Skipped)) {
    gen_ = at::detail::createCPUGenerator(uint64_t(run.seed) * 1000003ull + uint64_t(batch_index));
    options_ = at::TensorOptions().device(at::Device(run.device)).dtype(scalar_type(run.dtype));
    const auto& taps = parts.backbone->taps();
    tap_listeners_.assign(taps.size(), {});
    for (size_t t = 0; t < taps.size(); ++t)
      for (auto* l : parts.layers)
        if (l->wants_tap(int(t))) tap_listeners_[t].push_back(l);
  }

  // Where this step's records go (null: this batch is not recorded).
  void set_record(StepRecord* rec, const std::vector<at::Tensor>* ref_probe, std::vector<at::Tensor>* capture) {
    rec_ = rec, ref_probe_ = ref_probe, capture_ = capture;
  }
  double step_flops() const { return flops_; }
  void add_flops(double f) { flops_ += f; }
  // Whether the reference's site outputs outgrew max_probe_capture_bytes() (none are kept then).
  bool capture_dropped() const { return capture_dropped_; }
  double step_ms() const { return ms_; }
  bool failed() const { return failed_; }

  // --- Hooks
  Tensors at(int site, Tensors inputs, const SiteFn& compute) override {
    return at(site, std::move(inputs), compute, kNaN);
  }
  Tensors at(int site, Tensors inputs, const SiteFn& compute, double flops_per_sample) override {
    SiteCall call;
    call.flops_per_sample = flops_per_sample;
    call.site = site;
    call.info = &sites_[size_t(site)];
    call.step = &step_;
    call.inputs = std::move(inputs);
    SiteLog log;
    log.site = site;
    log.extra = rec_ ? &rec_->site_extra : nullptr;
    call.log = &log;
    Tensors out = dispatch(0, call, compute);
    Decision d = log.decision;
    if (d != Decision::Blend) {
      if (log.computed_fraction >= 1.0) d = Decision::Compute;
      else if (log.computed_fraction > 0.0) d = Decision::Partial;
    }
    decisions_[size_t(site)] = uint8_t(d);
    // The statistics are computed after the step's timer stops (end_step): the recorder
    // measures, it should not be charged to the method it measures. Here the probe samples
    // are only copied, while they are hot in the cache, so that the site's whole output (the
    // whole batch) is freed as soon as the model is done with it: views kept to the step's
    // end, and from one step to the next, held every site's output. The copy's time is taken
    // off the step's.
    if (rec_ && !out.empty()) {
      const auto t0 = std::chrono::steady_clock::now();
      const at::Tensor view = out[0].narrow(0, 0, std::min<int64_t>(run_.probe_samples, out[0].size(0)));
      Pending p{site, d, log.signal, at::Tensor(), Source(view)};
      const Probe& prev = prev_[size_t(site)];
      // A reused output is the very tensor recorded last time: nothing to copy.
      p.same = prev.x.defined() && prev.source.is(p.source);
      if (!p.same) p.probe = view.clone(at::MemoryFormat::Contiguous);
      pending_.push_back(std::move(p));
      copy_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    return out;
  }
  bool wants_tap(int tap) const override { return !tap_listeners_[size_t(tap)].empty(); }
  void tap(int tap, const at::Tensor& value) override {
    for (auto* l : tap_listeners_[size_t(tap)]) l->tap(tap, value);
  }
  Ops& ops() override { return ops_; }
  GuidanceCache* guidance_cache() override {
    for (auto* l : parts_.layers)
      if (GuidanceCache* g = l->guidance_cache()) return g;
    return nullptr;
  }

  // --- StepDriver
  Hooks& hooks() override { return *this; }
  void begin_step(const StepIndex& s) override {
    throw_if_interrupted();
    step_ = s;
    flops_ = 0;
    std::fill(decisions_.begin(), decisions_.end(), uint8_t(Decision::Skipped));
    start_ = std::chrono::steady_clock::now();
    copy_ms_ = 0;
    for (auto* l : parts_.layers) l->begin_step(s);
    ops().begin_step(s);
  }
  bool end_step(const at::Tensor& x_after) override {
    for (auto* l : parts_.layers) l->end_step(decisions_);
    ops().end_step();
    const bool finite = x_after.is_floating_point() ? at::isfinite(x_after).all().item<bool>() : true;
    ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count() - copy_ms_;
    for (auto& p : pending_) record(p);
    pending_.clear();
    failed_ = !finite;
    return finite;
  }
  at::Tensor randn(at::IntArrayRef shape) override { return at::randn(shape, gen_).to(options_); }
  at::TensorOptions options() const override { return options_; }

 private:
  static at::ScalarType scalar_type(const std::string& dtype) {
    if (dtype == "bfloat16") return at::kBFloat16;
    if (dtype == "float16") return at::kHalf;
    return at::kFloat;
  }

  Tensors dispatch(size_t k, SiteCall& call, const SiteFn& compute) {
    if (k == parts_.layers.size()) {
      const Site& s = *call.info;
      double frac = 1.0;
      if (call.rows.defined()) {
        CL_CHECK(s.rows, "a layer asked site `" << s.name << "` for a subset of rows, which it does not support");
        frac = double(call.rows.size(0)) / double(call.inputs[0].size(1));
      }
      const double batch = call.inputs.empty() ? 1.0 : double(call.inputs[0].size(0));
      const double full = std::isnan(call.flops_per_sample) ? s.flops_per_sample : call.flops_per_sample;
      flops_ += (s.fixed_flops_per_sample + (full - s.fixed_flops_per_sample) * frac) * batch;
      call.log->computed_fraction += frac;
      return compute(call);
    }
    return parts_.layers[k]->at(call, [this, k, &compute](const SiteCall& c) {
      SiteCall inner = c;
      return dispatch(k + 1, inner, compute);
    });
  }

  // Which tensor a probe was taken from, without keeping its memory: a weak reference to its
  // storage (the storage object stays, so its address is never another tensor's; its data
  // is freed with the tensor) and the view's geometry.
  struct Source {
    Source() = default;
    explicit Source(const at::Tensor& v)
        : storage(v.storage().getWeakStorageImpl()), offset(v.storage_offset()), sizes(v.sizes().vec()),
          strides(v.strides().vec()) {}
    bool is(const Source& o) const {
      if (!storage || !o.storage) return false;
      auto mine = storage->lock();
      return mine && mine == o.storage->lock() && offset == o.offset && sizes == o.sizes && strides == o.strides;
    }
    std::optional<c10::weak_intrusive_ptr<c10::StorageImpl>> storage;
    int64_t offset = 0;
    std::vector<int64_t> sizes, strides;
  };
  struct Probe {
    at::Tensor x;  // the probe samples' values, a copy
    double l1 = 0, sq = 0;
    Source source;
  };
  struct Pending {
    int site;
    Decision decision;
    double signal;
    at::Tensor probe;  // a copy of the probe samples (undefined when `same`)
    Source source;
    bool same = false;  // the site's output is the tensor recorded last time
  };

  // Drift and error on the probe samples in one plain loop over the floats: per site and
  // step this replaces a dozen small LibTorch reductions (whose dispatch cost, not their
  // arithmetic, dominated the logging overhead).
  void record(Pending& pend) {
    const int site = pend.site;
    rec_->decision[size_t(site)] = uint8_t(pend.decision);
    rec_->signal[size_t(site)] = pend.signal;
    Probe& prev = prev_[size_t(site)];
    const bool same = pend.same;  // (then prev.x holds these very values)
    const at::Tensor& p = same ? prev.x : pend.probe;
    const bool has_prev = prev.x.defined() && prev.x.sizes() == p.sizes();
    const at::Tensor* ref =
        ref_probe_ && (*ref_probe_)[size_t(site)].defined() && (*ref_probe_)[size_t(site)].sizes() == p.sizes()
            ? &(*ref_probe_)[size_t(site)]
            : nullptr;
    ProbeSums sums;
    if (same && !ref) {
      sums.l1 = prev.l1, sums.sq = prev.sq, sums.dot = prev.sq;
    } else if (p.device().is_cpu() && p.scalar_type() == at::kFloat) {
      const float* a = p.data_ptr<float>();
      const float* b = has_prev && !same ? prev.x.data_ptr<float>() : nullptr;
      const float* r = ref ? ref->data_ptr<float>() : nullptr;
      if (b && r) sums = probe_sums<true, true>(a, b, r, p.numel());
      else if (b) sums = probe_sums<true, false>(a, b, r, p.numel());
      else if (r) sums = probe_sums<false, true>(a, b, r, p.numel());
      else sums = probe_sums<false, false>(a, b, r, p.numel());
    } else {
      sums = probe_sums_device(p, has_prev && !same ? &prev.x : nullptr, ref);
    }
    if (same) sums.dot = sums.sq, sums.dist_prev = 0;
    if (has_prev) {
      rec_->drift_cos[size_t(site)] = prev.sq > 0 && sums.sq > 0 ? sums.dot / std::sqrt(sums.sq * prev.sq) : kNaN;
      rec_->drift_rel_l1[size_t(site)] = ratio(sums.dist_prev, prev.l1);
    }
    if (ref) rec_->err_ref[size_t(site)] = ratio(sums.dist_ref, sums.ref_l1);
    if (capture_ && !capture_dropped_) {
      const int64_t bytes = p.numel() * int64_t(sizeof(float));
      if (captured_bytes_ + bytes > probe_cap_) {
        capture_dropped_ = true;  // the caller drops what was kept
      } else {
        captured_bytes_ += bytes;
        // (the probe is this driver's own copy, never written: it can be kept as it is)
        (*capture_)[size_t(site)] = p.device().is_cpu() && p.scalar_type() == at::kFloat ? p : p.to(at::kFloat).cpu();
      }
    }
    if (!same) prev = {pend.probe, sums.l1, sums.sq, std::move(pend.source)};
  }
  std::vector<Pending> pending_;

  const RunParts& parts_;
  const RunOptions& run_;
  Ops& ops_;
  const std::vector<Site>& sites_;
  std::vector<Probe> prev_;
  std::vector<uint8_t> decisions_;
  std::vector<std::vector<SiteLayer*>> tap_listeners_;
  at::Generator gen_;
  at::TensorOptions options_;
  StepIndex step_;
  StepRecord* rec_ = nullptr;
  const std::vector<at::Tensor>* ref_probe_ = nullptr;
  const int64_t probe_cap_ = max_probe_capture_bytes();  // read once per batch
  int64_t captured_bytes_ = 0;
  bool capture_dropped_ = false;
  std::vector<at::Tensor>* capture_ = nullptr;
  double flops_ = 0, ms_ = 0, copy_ms_ = 0;
  bool failed_ = false;
  std::chrono::steady_clock::time_point start_;
};

// A line every ~10 s inside a long trajectory: step, batch and ETA.
struct Progress {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), last = start;
  int64_t done = 0, total = 0;
  void step(int i, int T, int64_t batch, int64_t batches) {
    ++done;
    const auto now = std::chrono::steady_clock::now();
    if (std::chrono::duration<double>(now - last).count() < 10.0 || done >= total) return;
    last = now;
    const double el = std::chrono::duration<double>(now - start).count();
    std::printf("    step %d/%d, batch %lld/%lld: %.0fs elapsed, ETA %.0fs\n", i + 1, T, (long long)batch + 1,
                (long long)batches, el, el / double(done) * double(total - done));
    std::fflush(stdout);
  }
};

// Wraps a pipeline's driver calls so the runner records per step.
class RecordingDriver final : public StepDriver {
 public:
  RecordingDriver(Driver& d, Trajectory& traj, RunContext& ctx, bool first, const ReferenceTrace* ref,
                  ReferenceTrace* capture, size_t P, size_t L)
      : d_(d), traj_(traj), ctx_(ctx), first_(first), ref_(ref), capture_(capture), P_(P), L_(L) {}
  Hooks& hooks() override { return d_; }
  void begin_step(const StepIndex& s) override {
    CL_CHECK(s.index >= 0 && s.index < int(traj_.steps.size()),
             "pipeline step " << s.index << " is outside its declared " << traj_.steps.size() << " steps");
    index_ = s.index;
    StepRecord* rec = first_ ? &traj_.steps[size_t(s.index)] : nullptr;
    if (rec) {
      const size_t E = ctx_.extras().size();
      rec->site_extra.assign(E, std::vector<double>(P_, kNaN));
      rec->linear_extra.assign(E, std::vector<double>(L_, kNaN));
      ctx_.linear_extra = &rec->linear_extra;
      ctx_.site_extra = &rec->site_extra;
    } else {
      ctx_.linear_extra = nullptr;
      ctx_.site_extra = nullptr;
    }
    d_.set_record(rec, first_ && ref_ ? &ref_->probe[size_t(s.index)] : nullptr,
                  first_ && capture_ ? &capture_->probe[size_t(s.index)] : nullptr);
    d_.begin_step(s);
  }
  bool end_step(const at::Tensor& x_after) override {
    const bool ok = d_.end_step(x_after);
    StepRecord& st = traj_.steps[size_t(index_)];
    if (progress) progress->step(index_, int(traj_.steps.size()), batch, batches);
    st.wall_ms += d_.step_ms();
    st.flops += d_.step_flops();
    traj_.wall_s += d_.step_ms() / 1000;
    traj_.flops += d_.step_flops();
    if (d_.step_flops() > 0) traj_.forwards += 1;
    if (!ok) return false;
    if (first_ && ref_ && ref_->x_after_step[size_t(index_)].defined())
      st.err_ref_rel_l1 = rel_l1_any(x_after, ref_->x_after_step[size_t(index_)]);
    if (first_ && capture_) capture_->x_after_step[size_t(index_)] = x_after.cpu().clone();
    return true;
  }
  at::Tensor randn(at::IntArrayRef shape) override { return d_.randn(shape); }
  at::TensorOptions options() const override { return d_.options(); }
  int failed_index() const { return index_; }
  Progress* progress = nullptr;
  int64_t batch = 0, batches = 1;

 private:
  Driver& d_;
  Trajectory& traj_;
  RunContext& ctx_;
  bool first_;
  const ReferenceTrace* ref_;
  ReferenceTrace* capture_;
  size_t P_, L_;
  int index_ = 0;
};

// An output stream onto a file descriptor that remembers why a write failed (torch::save
// only says that it failed, with a stack trace).
class FdBuf final : public std::streambuf {
 public:
  explicit FdBuf(int fd) : fd_(fd) { setp(buf_, buf_ + sizeof buf_); }
  int error() const { return err_; }

 protected:
  int sync() override { return drain() ? 0 : -1; }
  int_type overflow(int_type c) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) *pptr() = char(c), pbump(1);
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n <= epptr() - pptr()) {
      std::memcpy(pptr(), s, size_t(n));
      pbump(int(n));
      return n;
    }
    return drain() && write_all(s, size_t(n)) ? n : 0;
  }

 private:
  bool write_all(const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        err_ = w < 0 ? errno : ENOSPC;
        return false;
      }
      p += w, n -= size_t(w);
    }
    return true;
  }
  bool drain() {
    const bool ok = err_ == 0 && write_all(pbase(), size_t(pptr() - pbase()));
    setp(buf_, buf_ + sizeof buf_);
    return ok;
  }
  int fd_;
  int err_ = 0;
  char buf_[1 << 16];
};

}  // namespace

Trajectory run_trajectory(const RunParts& parts, const RunOptions& run, const ReferenceTrace* ref,
                          ReferenceTrace* capture) {
  CL_CHECK(run.samples >= 1 && run.batch >= 1, "run.samples and run.batch must be >= 1");
  CL_CHECK(parts.backbone && parts.pipeline, "run_trajectory needs a backbone and a pipeline");
  c10::InferenceMode guard;
  Backbone& bb = *parts.backbone;
  const auto& sites = bb.sites();
  const Pipeline& pipe = *parts.pipeline;
  const int T = pipe.num_steps(parts.sampler);
  Trajectory traj;
  std::vector<at::Tensor> outs, labels, truth;
  if (capture) {
    capture->x_after_step.assign(size_t(T), at::Tensor());
    capture->probe.assign(size_t(T), std::vector<at::Tensor>(sites.size()));
  }
  traj.steps.assign(size_t(T), empty_record(sites.size()));
  for (int i = 0; i < T; ++i) traj.steps[size_t(i)].t = pipe.timestep(parts.sampler, i);

  Progress progress;
  progress.total = int64_t(T) * ((run.samples + run.batch - 1) / run.batch);
  for (int64_t b0 = 0, bi = 0; b0 < run.samples; b0 += run.batch, ++bi) {
    const int64_t B = std::min<int64_t>(run.batch, run.samples - b0);
    const bool first = bi == 0;
    RunContext ctx;
    ctx.sites = &sites;
    ctx.sequence = bb.sequence_kind();
    ctx.taps = &bb.taps();
    ctx.linears = &bb.linears();
    ctx.steps = T;
    ctx.inner_steps = pipe.inner_steps(parts.sampler);
    ctx.recording = first;
    ctx.backbone_digest = parts.backbone_digest;
    for (auto* l : parts.layers) l->begin_run(ctx);
    DenseOps dense;
    Ops& ops = parts.ops ? *parts.ops : dense;
    ops.begin_run(bb.linears(), &ctx);
    if (first) traj.extras = ctx.extras();
    Driver driver(parts, run, ops, bi);
    ctx.add_flops = [&driver](double f) { driver.add_flops(f); };
    RecordingDriver rd(driver, traj, ctx, first, ref, capture, sites.size(), bb.linears().size());
    rd.progress = &progress;
    rd.batch = bi;
    rd.batches = traj.batches = (run.samples + run.batch - 1) / run.batch;
    PipelineInputs in;
    in.backbone = &bb;
    in.sampler = parts.sampler;
    in.guidance = parts.guidance;
    in.run = &run;
    in.cond = pipe.seeded_condition(bb, b0, B, run.seed);
    in.batch = B;
    at::Tensor x = pipe.run(in, rd);
    if (!x.defined() || driver.failed()) {
      traj.failed_step = rd.failed_index();
      traj.error = "non-finite values (NaN or inf) in the sample after step " + std::to_string(traj.failed_step) +
                   " (timestep " + std::to_string(traj.steps[size_t(traj.failed_step)].t) + ", batch " +
                   std::to_string(bi) + ")";
      return traj;
    }
    if (first && capture && driver.capture_dropped()) {
      // A reference whose every site output over every step would outgrow the memory (a
      // billion-parameter model over hundreds of steps) keeps none: its variants log no
      // site-level error (err_ref), everything else is unchanged.
      for (auto& row : capture->probe) row.assign(row.size(), at::Tensor());
      std::printf("[cachelab] the reference's site outputs exceed %.3g GB over its %d steps: site-level error against "
                  "it (err_ref) is not recorded for this experiment (CACHELAB_MAX_PROBE_BYTES)\n",
                  double(max_probe_capture_bytes()) / 1e9, T);
      std::fflush(stdout);
    }
    outs.push_back(x.is_floating_point() ? x.to(at::kFloat).cpu() : x.cpu());
    if (in.cond.labels.defined()) labels.push_back(in.cond.labels.cpu());
    if (in.cond.frames.defined()) truth.push_back(in.cond.frames.to(at::kFloat).cpu());
  }
  traj.samples = at::cat(outs);
  if (!labels.empty()) traj.labels = at::cat(labels);
  if (!truth.empty()) traj.truth = at::cat(truth);
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
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  // A unique temporary name: parallel tasks (a Slurm array) may save the same reference.
  const std::string tmp = temp_path(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_write(path, "creating the reference cache", errno);
  FdBuf buf(fd);
  bool ok = true;
  try {
    std::ostream os(&buf);
    torch::save(flat, os);
    os.flush();
    ok = bool(os) && buf.error() == 0;
  } catch (const std::exception&) {
    ok = false;
  }
  int err = buf.error();
  if (::close(fd) != 0 && ok) ok = false, err = errno;
  if (ok) std::filesystem::rename(tmp, path, ec);
  if (!ok || ec) {
    ::unlink(tmp.c_str());
    fail_write(path, "saving the reference trajectory", ok ? ec.value() : err);
  }
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
