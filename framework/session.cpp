#include "framework/session.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <c10/core/InferenceMode.h>

#include "framework/artefacts.h"
#include "framework/error.h"
#include "framework/interrupt.h"
#include "framework/lock.h"
#include "framework/recorder.h"
#include "framework/registries.h"
#include "framework/runner.h"
#include "framework/scorer.h"
#include "framework/summary.h"
#include "framework/system_info.h"
#include "framework/backbone.h"
#include "framework/layer.h"
#include "framework/paths.h"
#include "framework/pipeline.h"
#include "framework/profile.h"
#include "framework/multi_run.h"

namespace cachelab {
namespace fs = std::filesystem;

namespace {

// `key:` of a run config, or a map with `type: fallback`.
ConfigNode component_or(const ConfigNode& cfg, const char* key, const char* fallback) {
  if (const ConfigNode* n = cfg.find(key))
    if (n->is_map() && n->find("type")) return *n;
  ConfigNode m = ConfigNode::make_map(key);
  m.child("type") = ConfigNode::make_scalar(fallback, std::string(key) + ".type");
  return m;
}

// Everything a run is built from, owned.
struct BuiltRun {
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<Pipeline> pipeline;
  std::unique_ptr<Guidance> guidance;
  std::unique_ptr<SiteLayer> cache;
  std::unique_ptr<Ops> ops;  // the chain's outermost; null = dense
  RunOptions run;
  std::string backbone_digest;  // of the weights file ("" for a random model)
  RunParts parts(Backbone& bb) const {
    RunParts rp;
    rp.backbone_digest = backbone_digest;
    rp.backbone = &bb;
    rp.pipeline = pipeline.get();
    rp.sampler = sampler.get();
    rp.guidance = guidance.get();
    rp.layers = {cache.get()};
    rp.ops = ops.get();
    return rp;
  }
};


std::vector<float> to_floats(const at::Tensor& t) {
  auto c = t.contiguous().to(at::kFloat);
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Everything one process keeps between runs: built backbones, loaded references, the scorer (judge, decoders).
class Session {
 public:
  Session(const ExperimentSpec& spec, const SweepOptions& o) : spec_(spec), o_(o) {
    dir_ = resolve_path(o.results_root) + "/" + spec.name;
    info_ = system_info(o.threads > 0 ? o.threads : 1);
  }
  const std::string& dir() const { return dir_; }
  const SystemInfo& info() const { return info_; }

  // Runs (or skips) one run under its lock (see RunSession::execute).
  RunOutcome execute(const RunSpec& run, bool after_wait) {
    const std::string path = dir_ + "/" + run.run_id + ".h5";
    // --force redoes a done run, but not one another process finished while this one waited.
    auto finished = [&] {
      auto existing = read_run_info(path);
      if (!existing || (o_.force && !after_wait)) return false;
      if (existing->status == "done") {
        std::printf("  %-28s skipped (done%s: %s)\n", run.name.c_str(), after_wait ? " by another process" : "",
                    run.run_id.c_str());
        return true;
      }
      return false;
    };
    if (finished()) return RunOutcome::Done;
    if (after_wait)
      if (auto existing = read_run_info(path); existing && existing->status == "failed" && written_since_start(path)) {
        std::printf("  %-28s FAILED in another process: %s\n", run.name.c_str(), existing->error.c_str());
        return RunOutcome::Failed;
      }
    std::string holder;
    auto lock = RunLock::try_acquire(dir_ + "/" + run.run_id + ".lock", &holder);
    if (!lock) {
      if (!after_wait) std::printf("  %-28s in progress elsewhere (%s)\n", run.name.c_str(), holder.c_str());
      return RunOutcome::Busy;
    }
    if (finished()) return RunOutcome::Done;  // finished by the lock's last holder
    try {
      const RunOutcome r = run_now(run, path);
      if (r == RunOutcome::Busy && !after_wait)
        std::printf("  %-28s waits for its reference, in progress elsewhere\n", run.name.c_str());
      return r;
    } catch (const Error& e) {
      // The run keeps a file saying why it failed (its row in the index), if one can be written.
      if (!interrupted()) record_failure(run, path, e.what());
      throw;
    }
  }

  // Builds what a run needs (weights, judge) so that bad files fail before anything runs.
  void prepare(const RunSpec& run) {
    Backbone& bb = backbone(*run.config.find("backbone"), run_options(run.config));
    // Build the run's components and bind them to the backbone's sites once, so a layer
    // that matches no site (or a bad nested component) fails before anything runs.
    BuiltRun parts = build(run, bb);
    RunContext ctx;
    ctx.sites = &bb.sites();
    ctx.sequence = bb.sequence_kind();
    ctx.taps = &bb.taps();
    ctx.linears = &bb.linears();
    ctx.steps = parts.pipeline->num_steps(parts.sampler.get());
    ctx.inner_steps = parts.pipeline->inner_steps(parts.sampler.get());
    ctx.backbone_digest = parts.backbone_digest;
    // Artefacts not made yet (made when the run starts): the calibrators bind as they will
    // when fitting them, reading no file.
    const bool bind_later = missing_artefacts(run, "schedule") || missing_artefacts(run, "router");
    if (missing_artefacts(run)) {
      std::vector<Calibrator*> cals;
      parts.cache->calibrators(cals);
      if (Calibrator* c = parts.ops ? parts.ops->calibrator() : nullptr) cals.push_back(c);
      for (auto* c : cals) c->start_calibration();
    }
    if (!bind_later) parts.cache->begin_run(ctx);  // (a schedule or router not made yet: bound when the run starts)
    if (parts.ops) parts.ops->begin_run(bb.linears(), &ctx);
    if (parts.run.cfg_scale != 1.0) {
      try {
        bb.null_cond(parts.pipeline->condition(bb, 0, 1));
      } catch (const Error& e) {
        const ConfigNode* n = run.config.find("run") ? run.config.find("run")->find("cfg_scale") : nullptr;
        CL_FAIL((n ? n->where() + ": " : std::string("run.cfg_scale: ")) << "guidance at scale " << parts.run.cfg_scale
                                                                        << " is impossible: " << e.what());
      }
    }
    scorer_.prepare(run.config);
  }

  // Runs `run` with its calibrators observing, then writes what they fitted. The cache
  // stack's calibrators are fitted one run each, innermost first (an outer corrector is
  // fitted with the inner ones applied; it is held meanwhile); the quantizer's joins the
  // first run.
  bool calibrate(const RunSpec& run, std::set<std::string>& written) {
    Backbone& bb = backbone(*run.config.find("backbone"), run_options(run.config));
    BuiltRun parts = build(run, bb);
    std::vector<Calibrator*> chain;
    parts.cache->calibrators(chain);
    Calibrator* ops_cal = parts.ops ? parts.ops->calibrator() : nullptr;
    auto fresh = [&](Calibrator* c) { return written.insert(resolve_path(c->calibration_file())).second; };
    std::vector<Calibrator*> todo;
    for (auto* c : chain)
      if (fresh(c)) todo.push_back(c);
    const bool ops_todo = ops_cal && fresh(ops_cal);
    if (todo.empty() && !ops_todo) {
      if (!chain.empty() || ops_cal) std::printf("  %-28s skipped (its file was fitted above)\n", run.name.c_str());
      return false;
    }
    at::set_num_threads(parts.run.threads);
    RunParts rp = parts.parts(bb);
    const size_t passes = std::max<size_t>(todo.size(), 1);
    for (size_t p = 0; p < passes; ++p) {
      std::vector<Calibrator*> cals;
      if (p < todo.size()) cals.push_back(todo[p]);
      if (p == 0 && ops_todo) cals.push_back(ops_cal);
      for (size_t q = p + 1; q < todo.size(); ++q) todo[q]->hold(true);
      for (auto* c : cals) c->start_calibration();
      const auto t0 = std::chrono::steady_clock::now();
      Trajectory tr = run_trajectory(rp, parts.run, nullptr, nullptr);
      CL_CHECK(tr.failed_step < 0, "calibration run of `" << run.name << "` failed: " << tr.error);
      for (bool more = true; more;) {  // a searching calibrator asks for more runs
        more = false;
        for (auto* c : cals)
          if (auto* m = dynamic_cast<MultiRunCalibrator*>(c)) more = m->another_run(tr.flops, tr.samples) || more;
        if (!more) break;
        tr = run_trajectory(rp, parts.run, nullptr, nullptr);
        CL_CHECK(tr.failed_step < 0, "calibration run of `" << run.name << "` failed: " << tr.error);
      }
      for (auto* c : cals)
        std::printf("  %-28s %s (%.1fs, %d samples)\n", run.name.c_str(), c->finish_calibration().c_str(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), parts.run.samples);
      std::fflush(stdout);
      for (size_t q = p + 1; q < todo.size(); ++q) todo[q]->hold(false);
    }
    return true;
  }

  // What `run` reads that is fitted on demand (framework/artefacts.h). Returns how many were made.
  int make_artefacts(const RunSpec& run) {
    FitArtefacts fit;
    fit.calibrate = [&](const RunSpec& c, std::set<std::string>& skip) { calibrate(c, skip); };
    fit.profile = [&](const RunSpec& ref, const ProfileOptions& po, const std::string& path) {
      profile_reference(spec_.name, ref, po, [&](SiteLayer& layer) { observe(ref, layer, po.samples); }, path);
    };
    return ensure_artefacts(spec_, run, fit);
  }

  // Runs `run` once (its first `samples` samples in one batch when > 0) with `outer`
  // stacked outside its layers; nothing is written (profiling).
  void observe(const RunSpec& run, SiteLayer& outer, int samples) {
    Backbone& bb = backbone(*run.config.find("backbone"), run_options(run.config));
    BuiltRun parts = build(run, bb);
    if (samples > 0) parts.run.samples = parts.run.batch = samples;
    at::set_num_threads(parts.run.threads);
    c10::InferenceMode guard;
    RunParts rp = parts.parts(bb);
    rp.layers.insert(rp.layers.begin(), &outer);
    Trajectory tr = run_trajectory(rp, parts.run, nullptr, nullptr);
    CL_CHECK(tr.failed_step < 0, "`" << run.name << "` failed at step " << tr.failed_step << ": " << tr.error);
  }

  // Preflight: what `run` costs at most, scaled from a one-sample dense trajectory of its
  // backbone and schedule (timed after a warm-up, once per distinct backbone and schedule).
  RunCost cost(const RunSpec& run) {
    const ConfigNode& cfg = run.config;
    RunOptions ro = run_options(cfg);
    if (o_.threads > 0) ro.threads = o_.threads;
    std::string key = ro.device + "|" + ro.dtype + "|" + std::to_string(ro.cfg_scale) + "|" + std::to_string(ro.threads);
    for (const char* k : {"backbone", "sampler", "pipeline", "guidance"})
      if (const ConfigNode* n = cfg.find(k)) key += "|" + to_yaml(*n);
    auto it = unit_costs_.find(key);
    if (it == unit_costs_.end()) it = unit_costs_.emplace(key, measure_unit(run)).first;
    return scale_cost(it->second, ro, run.is_reference);
  }

  // The reference `run` is measured against: loaded from the cache, else run (under its
  // lock); null when another process holds that lock.
  const ReferenceTrace* reference(const RunSpec& run) {
    auto it = refs_.find(run.reference_id);
    if (it != refs_.end()) return &it->second;
    // A reference that failed is not run again for every variant that needs it.
    CL_CHECK(!failed_refs_.count(run.reference_id),
             "its reference " << run.reference_id << " failed earlier in this process; see its run file");
    const std::string cache = dir_ + "/.cache/" + run.reference_id + ".pt";
    ReferenceTrace trace;
    if (load_reference(trace, cache)) return &refs_.emplace(run.reference_id, std::move(trace)).first->second;
    for (auto& r : spec_.references)
      if (r.run_id == run.reference_id) {
        auto lock = RunLock::try_acquire(dir_ + "/" + r.run_id + ".lock");
        if (!lock) return nullptr;
        if (load_reference(trace, cache))  // saved by the lock's last holder
          return &refs_.emplace(run.reference_id, std::move(trace)).first->second;
        const std::string path = dir_ + "/" + r.run_id + ".h5";
        if (auto done = read_run_info(path); done && done->status == "done") {
          // Its cache was pruned (every run was done then): the same seed gives the same
          // trajectory, so it is computed again for the cache only; its run file stays.
          recapture(r, cache);
          return &refs_.at(r.run_id);
        }
        run_now(r, path);
        auto found = refs_.find(run.reference_id);
        if (found == refs_.end()) failed_refs_.insert(run.reference_id);
        CL_CHECK(found != refs_.end(), "the reference run " << r.run_id << " failed; see its run file");
        return &found->second;
      }
    CL_FAIL("no reference " << run.reference_id << " in the experiment");
  }

 private:
  bool written_since_start(const std::string& path) const {
    std::error_code ec;
    const auto t = fs::last_write_time(path, ec);
    return !ec && t >= started_;
  }
  static RunOptions run_options(const ConfigNode& cfg) {
    RunOptions ro = read_checked<RunOptions>(cfg.find("run") ? *cfg.find("run") : ConfigNode::make_map("run"), "run");
    ro.seed = cfg.find("seed") ? std::stoll(cfg.find("seed")->scalar) : 0;
    return ro;
  }
  // A backbone with an explicitly empty `weights:` is a random model: say so loudly, once.
  std::string random_weights_warning(const ConfigNode& node) {
    const ConfigNode* w = node.find("weights");
    if (!w || !w->is_scalar() || !w->scalar.empty()) return "";
    const std::string msg = "backbone.weights is empty: this run samples from a randomly initialised model, "
                            "whose samples and errors mean nothing about a trained one";
    if (warned_random_.insert(to_yaml(node)).second) std::fprintf(stderr, "warning: %s\n", msg.c_str());
    return msg;
  }
  static at::ScalarType dtype_of(const std::string& d) {
    return d == "bfloat16" ? at::kBFloat16 : d == "float16" ? at::kHalf : at::kFloat;
  }
  // One backbone per (config, device, dtype), built once per process.
  Backbone& backbone(const ConfigNode& node, const RunOptions& ro) {
    const std::string key = to_yaml(node) + "|" + ro.device + "|" + ro.dtype;
    auto it = backbones_.find(key);
    if (it == backbones_.end()) {
      if (ro.device != "cpu")
        CL_CHECK(at::hasCUDA(), "run.device is `" << ro.device << "` but this LibTorch build has no CUDA device; "
                                                 "use run.device=cpu or build against a CUDA LibTorch (README)");
      // A missing weights file fails before a large model is allocated (DiT-XL/2: 2.7 GB).
      if (const ConfigNode* w = node.find("weights"); w && w->is_scalar() && !w->scalar.empty())
        CL_CHECK(fs::is_regular_file(resolve_path(w->scalar)),
                 w->where() << ": weights file `" << w->scalar << "` not found (looked at " << resolve_path(w->scalar)
                            << "); the bundled models are made by `cachelab train` (docs/models.md), the papers' "
                               "public checkpoints are converted as docs/full-size.md shows");
      auto bb = backbones().build(node);
      if (ro.device != "cpu" || ro.dtype != "float32") bb->to(at::Device(ro.device), dtype_of(ro.dtype));
      it = backbones_.emplace(key, std::move(bb)).first;
    }
    return *it->second;
  }
  BuiltRun build(const RunSpec& run, Backbone& bb) {
    const ConfigNode& cfg = run.config;
    BuiltRun p;
    p.run = run_options(cfg);
    if (o_.threads > 0) p.run.threads = o_.threads;
    if (const ConfigNode* w = cfg.find("backbone")->find("weights"); w && w->is_scalar() && !w->scalar.empty())
      p.backbone_digest = file_digest(resolve_path(w->scalar));
    BuildContext ctx;
    ctx.sites = &bb.sites();
    ctx.taps = &bb.taps();
    ctx.linears = &bb.linears();
    ctx.run = &p.run;
    if (const ConfigNode* s = cfg.find("sampler"))
      if (s->is_map() && s->find("type")) p.sampler = samplers().build(*s, nullptr, ctx);
    p.pipeline = pipelines().build(component_or(cfg, "pipeline", "image"), nullptr, ctx);
    p.guidance = guidances().build(component_or(cfg, "guidance", "cfg"), nullptr, ctx);
    ConfigNode cache_node = component_or(cfg, "cache", "none");
    if (run.is_reference) cache_node = component_or(ConfigNode::make_map(), "cache", "none");
    p.cache = caches().build(cache_node, nullptr, ctx);
    // ops: [outermost, ..., innermost]; the innermost wraps the dense ops. A reference runs
    // none, or the experiment's `reference_ops` (an exact K/V cache for long AR rollouts).
    if (const ConfigNode* ops = cfg.find(run.is_reference ? "reference_ops" : "ops"); ops && ops->is_seq()) {
      for (auto it = ops->seq.rbegin(); it != ops->seq.rend(); ++it) {
        auto o = ops_layers().build(*it, nullptr, ctx);
        if (p.ops) o->set_inner(std::move(p.ops));
        p.ops = std::move(o);
      }
    }
    return p;
  }
  // The first passes at a new batch shape are slow (allocator, BLAS and oneDNN set-up);
  // run them untimed so the reference is not charged for them.
  void warm_up(Backbone& bb, const BuiltRun& p) {
    const RunOptions& ro = p.run;
    const int64_t b = std::min(ro.batch, ro.samples);
    const std::string key = std::to_string(reinterpret_cast<uintptr_t>(&bb)) + "/" + std::to_string(b) + "/" +
                            std::to_string(ro.cfg_scale != 1.0);
    if (!warmed_.insert(key).second) return;
    guided_evals(bb, p, b, 2);
  }
  // `passes` guided evaluations of a batch of b; returns the fastest one's seconds.
  double guided_evals(Backbone& bb, const BuiltRun& p, int64_t b, int passes) {
    const RunOptions& ro = p.run;
    c10::InferenceMode guard;
    PassThroughHooks hooks(bb.linears());
    const auto opts = at::TensorOptions().device(at::Device(ro.device)).dtype(dtype_of(ro.dtype));
    Cond cond = p.pipeline->condition(bb, 0, b);
    if (cond.labels.defined()) cond.labels = cond.labels.to(opts.device());
    auto x = bb.example_input(b, opts);
    auto t = at::full({b}, 500.0, opts.dtype(at::kFloat));
    double best = 1e300;
    for (int i = 0; i < passes; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      p.guidance->eval(bb, x, t, cond, ro.cfg_scale, hooks);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  }
  void recapture(const RunSpec& ref, const std::string& cache) {
    Backbone& bb = backbone(*ref.config.find("backbone"), run_options(ref.config));
    BuiltRun parts = build(ref, bb);
    at::set_num_threads(parts.run.threads);
    warm_up(bb, parts);
    RunParts rp = parts.parts(bb);
    ReferenceTrace capture;
    Trajectory tr = run_trajectory(rp, parts.run, nullptr, &capture);
    CL_CHECK(tr.failed_step < 0, "the reference run " << ref.run_id << " failed when computed again: " << tr.error);
    save_reference(capture, cache);
    refs_.emplace(ref.run_id, std::move(capture));
    std::printf("  %-28s trajectory computed again for its cache (its run file is kept)\n", ref.name.c_str());
  }

  UnitCost measure_unit(const RunSpec& run) {
    RunSpec dense = run;
    dense.is_reference = true;
    Backbone& bb = backbone(*run.config.find("backbone"), run_options(run.config));
    BuiltRun parts = build(dense, bb);
    parts.run.samples = parts.run.batch = 1;
    parts.run.probe_samples = 1;
    at::set_num_threads(parts.run.threads);
    warm_up(bb, parts);
    RunParts rp = parts.parts(bb);
    ReferenceTrace cap;
    const auto t0 = std::chrono::steady_clock::now();
    Trajectory tr = run_trajectory(rp, parts.run, nullptr, &cap);
    UnitCost u;
    u.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    u.flops = tr.flops;
    // A sample costs less in a full batch (larger GEMMs): scale by one evaluation at the run's
    // batch (at most 16) against one at a single sample, never below a twentieth.
    const int64_t b = std::min<int64_t>({int64_t(run_options(run.config).batch), int64_t(run_options(run.config).samples), 16});
    if (b > 1) {
      BuiltRun wide = build(dense, bb);
      wide.run.samples = wide.run.batch = int(b);
      warm_up(bb, wide);
      const double one = guided_evals(bb, parts, 1, 2), many = guided_evals(bb, wide, b, 2);
      if (one > 0) u.seconds *= std::clamp(many / (double(b) * one), 0.05, 1.0);
    }
    // As stored: floating tensors as float32.
    auto bytes = [](const at::Tensor& t) {
      return t.defined() ? double(t.numel()) * (t.is_floating_point() ? 4.0 : double(t.element_size())) : 0.0;
    };
    double numel = 1;
    for (int64_t d : bb.sample_shape()) numel *= double(d);
    u.sample_bytes = tr.samples.defined() ? bytes(tr.samples) : numel * 4;
    for (auto& x : cap.x_after_step) u.xstep_bytes += bytes(x);
    for (auto& row : cap.probe)
      for (auto& p : row) u.probe_bytes += bytes(p);
    u.steps = double(cap.probe.size());
    u.sites = double(bb.sites().size());
    u.site_out_bytes = u.steps > 0 ? u.probe_bytes / u.steps : 0;
    for (auto& nt : bb.named_tensors()) u.weights_bytes += double(nt.second.numel()) * double(nt.second.element_size());
    return u;
  }

  // speedup_wall as a measurement: the reference and the variant run in turn on one batch,
  // `timing_reps` times, in this process, after the warm-up. Returns the step-timer seconds
  // of each repetition: {reference, variant}.
  std::pair<std::vector<double>, std::vector<double>> time_interleaved(const RunSpec& run, Backbone& bb,
                                                                       const BuiltRun& parts) {
    const RunSpec* ref_spec = nullptr;
    for (auto& r : spec_.references)
      if (r.run_id == run.reference_id) ref_spec = &r;
    CL_CHECK(ref_spec, "internal: no reference " << run.reference_id);
    // The reference runs on its own backbone: another dtype or device under `reference_run`.
    Backbone& ref_bb = backbone(*ref_spec->config.find("backbone"), run_options(ref_spec->config));
    BuiltRun ref_parts = build(*ref_spec, ref_bb);
    RunOptions ro = parts.run;
    ro.samples = ro.batch = std::min({ro.samples, ro.batch, ro.timing_samples});
    RunOptions ref_ro = ref_parts.run;
    ref_ro.samples = ref_ro.batch = ro.samples;
    auto time_one = [&](const BuiltRun& p, Backbone& b, const RunOptions& o) {
      RunParts rp = p.parts(b);
      return run_trajectory(rp, o, nullptr, nullptr).wall_s;
    };
    std::vector<double> t_ref, t_var;
    for (int r = 0; r < ro.timing_reps; ++r) {
      // Alternate which goes first, so a slow drift of the machine favours neither.
      if (r % 2 == 0) t_ref.push_back(time_one(ref_parts, ref_bb, ref_ro)), t_var.push_back(time_one(parts, bb, ro));
      else t_var.push_back(time_one(parts, bb, ro)), t_ref.push_back(time_one(ref_parts, ref_bb, ref_ro));
    }
    return {t_ref, t_var};
  }

  RunMeta meta_of(const RunSpec& run, const RunOptions& ro) {
    const ConfigNode& cfg = run.config;
    RunMeta meta;
    meta.run_id = run.run_id;
    meta.experiment = spec_.name;
    meta.variant = run.name;
    meta.overrides = run.overrides;
    meta.config_yaml = run.resolved_yaml;
    meta.input_files = run.files;
    for (auto& a : run.artefacts) meta.input_files += a.path + "=" + file_digest(resolve_path(a.path)) + ";";
    meta.artefacts = artefacts_json(run);
    meta.git_sha = info_.git_sha;
    meta.git_dirty = info_.git_dirty;
    meta.created_utc = utc_now_iso();
    meta.host = info_.host;
    meta.blas = info_.blas;
    meta.cpu = info_.cpu;
    meta.torch_version = info_.torch_version;
    meta.threads = ro.threads;
    meta.seed = ro.seed;
    meta.is_reference = run.is_reference;
    meta.reference_run = run.reference_id;
    meta.warnings = random_weights_warning(*cfg.find("backbone"));
    return meta;
  }
  static SiteTable table_of(Backbone& bb) {
    SiteTable table;
    for (auto& s : bb.sites()) {
      table.names.push_back(s.name);
      table.parent.push_back(s.parent);
      table.flops_per_sample.push_back(s.flops_per_sample);
      table.kind.push_back(site_kind_name(s.kind));
      table.block.push_back(s.block);
      table.stream.push_back(s.stream);
    }
    for (auto& l : bb.linears()) table.linears.push_back(l.name);
    return table;
  }

  // A run that threw: its file says failed and why (a full disk may refuse even this).
  void record_failure(const RunSpec& run, const std::string& path, const std::string& reason) {
    try {
      const ConfigNode& cfg = run.config;
      Backbone& bb = backbone(*cfg.find("backbone"), run_options(cfg));
      RunOptions ro = run_options(cfg);
      if (o_.threads > 0) ro.threads = o_.threads;
      RunWriter writer(path, meta_of(run, ro), table_of(bb));
      writer.finish_failed(reason, -1);
    } catch (const std::exception&) {
    }
  }

  RunOutcome run_now(const RunSpec& run, const std::string& path) {
    make_artefacts(run);
    const ConfigNode& cfg = run.config;
    Backbone& bb = backbone(*cfg.find("backbone"), run_options(cfg));
    BuiltRun parts = build(run, bb);
    const RunOptions& ro = parts.run;
    at::set_num_threads(ro.threads);

    warm_up(bb, parts);
    const ReferenceTrace* ref = run.is_reference ? nullptr : reference(run);
    if (!run.is_reference && !ref) return RunOutcome::Busy;
    ReferenceTrace capture;
    RunWriter writer(path, meta_of(run, ro), table_of(bb));

    const auto t0 = std::chrono::steady_clock::now();
    RunParts rp = parts.parts(bb);
    Trajectory tr = run_trajectory(rp, ro, ref, run.is_reference ? &capture : nullptr);
    std::vector<ExtraInfo> extras;
    for (auto& e : tr.extras) extras.push_back({e.name, e.unit, e.meaning, e.per_linear});
    writer.set_extras(extras);
    for (size_t i = 0; i < tr.steps.size(); ++i) {
      StepRecord& st = tr.steps[i];
      if (tr.failed_step >= 0 && int(i) > tr.failed_step) st.wall_ms = st.flops = std::nan("");  // never ran
      if (run.is_reference) {
        st.err_ref_rel_l1 = 0;
        for (size_t p = 0; p < st.err_ref.size(); ++p)
          if (st.decision[p] != uint8_t(Decision::Skipped)) st.err_ref[p] = 0;
      }
      writer.append_step(st);
    }
    if (tr.failed_step >= 0) {
      if (run.is_reference) failed_refs_.insert(run.run_id);
      writer.finish_failed(tr.error, tr.failed_step);
      std::printf("  %-28s FAILED at step %d: %s\n", run.name.c_str(), tr.failed_step, tr.error.c_str());
      return RunOutcome::Failed;
    }
    if (run.is_reference) {
      save_reference(capture, dir_ + "/.cache/" + run.run_id + ".pt");
      refs_.emplace(run.run_id, capture);
      ref = &refs_.at(run.run_id);
    }
    const int n_save = std::min<int>(ro.save_samples, int(tr.samples.size(0)));
    auto dims = tr.samples.sizes().vec();
    dims[0] = n_save;
    std::vector<int64_t> d64(dims.begin(), dims.end());
    writer.write_float_array("samples/x", to_floats(tr.samples.narrow(0, 0, n_save)), d64);
    writer.write_float_array("samples/reference", to_floats(ref->samples.narrow(0, 0, n_save)), d64);
    if (tr.labels.defined()) {
      auto lab = tr.labels.narrow(0, 0, n_save).contiguous();
      writer.write_int64_array("samples/labels",
                               std::vector<int64_t>(lab.data_ptr<int64_t>(), lab.data_ptr<int64_t>() + n_save));
    }

    std::map<std::string, double> summary;
    summary["wall_s"] = tr.wall_s;
    summary["flops"] = tr.flops;
    summary["ref_wall_s"] = ref->wall_s;
    summary["ref_flops"] = ref->flops;
    summary["speedup_wall"] = ref->wall_s / tr.wall_s;
    summary["timing_shared_cores"] = o_.workers > 1 ? 1.0 : 0.0;
    summary["speedup_flops"] = ref->flops / tr.flops;
    summary["speedup_wall_suspect"] = 0.0;
    if (!run.is_reference && ro.timing_reps > 0) {
      auto [t_ref, t_var] = time_interleaved(run, bb, parts);
      add_timing_summary(summary, t_ref, t_var);
      writer.write_double_array("timing/reference_s", t_ref);
      writer.write_double_array("timing/variant_s", t_var);
    }
    summary["reuse_fraction"] = reuse_fraction(tr.steps);
    // Forwards (steps that ran one; a skipped step runs none): the most of any batch, and the mean per batch.
    summary["forwards"] = double(std::count_if(tr.steps.begin(), tr.steps.end(), [](const StepRecord& s) { return s.flops > 0; }));
    summary["mean_forwards"] = tr.batches > 0 ? tr.forwards / double(tr.batches) : 0.0;
    if (const int64_t tok = parts.pipeline->tokens_per_sample(); tok > 0) {
      summary["tokens_per_s"] = double(ro.samples) * double(tok) / tr.wall_s;
      summary["ref_tokens_per_s"] = double(ro.samples) * double(tok) / ref->wall_s;
    }
    if (const int64_t frames = parts.pipeline->frames_per_sample(); frames > 0) {
      summary["frames_per_s"] = double(ro.samples) * double(frames) / tr.wall_s;
      summary["ref_frames_per_s"] = double(ro.samples) * double(frames) / ref->wall_s;
    }
    for (size_t e = 0; e < tr.extras.size(); ++e)  // K/V caches: the peak of the bytes their layers hold (batch 0)
      if (tr.extras[e].name == "kv_bytes" && !tr.extras[e].per_linear)
        summary["kv_peak_bytes"] = peak_site_extra_sum(tr.steps, int(e));
    summary["final_err_rel_l1"] = tr.steps.empty() ? 0 : tr.steps.back().err_ref_rel_l1;
    summary["peak_resident_bytes"] = peak_resident_bytes();  // the process's, so far (VmHWM)
    for (auto& [k, v] : scorer_.score(cfg, tr.samples, tr.labels, tr.truth, run.reference_id, ref->samples)) summary[k] = v;
    writer.set_summary(summary);
    writer.finish_done();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("  %-28s done in %5.1fs  speedup %.2fx wall / %.2fx FLOPs", run.name.c_str(), secs,
                summary["speedup_wall"], summary["speedup_flops"]);
    for (const char* k : {"psnr", "fid", "accuracy", "token_match", "exact_match"})
      if (summary.count(k)) std::printf("  %s %.4g", k, summary[k]);
    std::printf("\n");
    std::fflush(stdout);
    return RunOutcome::Done;
  }

  const ExperimentSpec& spec_;
  SweepOptions o_;
  std::string dir_;
  SystemInfo info_;
  std::map<std::string, std::unique_ptr<Backbone>> backbones_;
  std::map<std::string, ReferenceTrace> refs_;
  Scorer scorer_{spec_.judge};  // the judge, decoders and metrics
  std::set<std::string> warmed_, warned_random_, failed_refs_;
  fs::file_time_type started_ = fs::file_time_type::clock::now();
  std::map<std::string, UnitCost> unit_costs_;
};

}  // namespace

struct RunSession::Impl {
  Impl(const ExperimentSpec& spec, const SweepOptions& o) : s(spec, o) {}
  Session s;
};
RunSession::RunSession(const ExperimentSpec& spec, const SweepOptions& o) : impl_(std::make_unique<Impl>(spec, o)) {}
RunSession::~RunSession() = default;
const std::string& RunSession::dir() const { return impl_->s.dir(); }
std::string RunSession::system_line() const { return describe(impl_->s.info()); }
void RunSession::prepare(const RunSpec& run) { impl_->s.prepare(run); }
RunOutcome RunSession::execute(const RunSpec& run, bool after_wait) { return impl_->s.execute(run, after_wait); }
bool RunSession::reference(const RunSpec& run) { return impl_->s.reference(run) != nullptr; }
RunCost RunSession::cost(const RunSpec& run) { return impl_->s.cost(run); }
bool RunSession::calibrate(const RunSpec& run, std::set<std::string>& written) { return impl_->s.calibrate(run, written); }
int RunSession::make_artefacts(const RunSpec& run) { return impl_->s.make_artefacts(run); }
void RunSession::observe(const RunSpec& run, SiteLayer& outer, int samples) { impl_->s.observe(run, outer, samples); }

}  // namespace cachelab
