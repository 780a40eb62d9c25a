// Site layers: the middleware the runner stacks around every site (see site.h).
// Cache policies, correctors and routers are site layers; the runner's recorder is the
// outermost one. A layer may hold inner layers (a corrector holds a policy).
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "framework/site.h"

namespace cachelab {

struct LinearRef;

// What a layer learns about the run it is bound to, and where it declares the extra
// per-step arrays it logs (stored as /sites/extra/<name> [T, P] or /linears/extra/<name>
// [T, L], with their meaning and unit as attributes).
class RunContext {
 public:
  struct Extra {
    std::string name, unit, meaning;
    bool per_linear = false;
  };
  const std::vector<Site>* sites = nullptr;
  const std::vector<Tap>* taps = nullptr;
  const std::vector<LinearRef>* linears = nullptr;
  int steps = 0;        // flat step count
  int inner_steps = 0;  // denoising steps per outer iteration
  bool recording = true;  // false for batches after the first (extras are not stored)
  SequenceKind sequence = SequenceKind::None;  // the backbone's (Backbone::sequence_kind)
  // file_digest of the backbone's weights ("" for a random model): files fitted on one
  // model (schedules, calibrations) check it.
  std::string backbone_digest;

  // Returns the extra's id (its index in the step's extra vectors). Declaring the same
  // name twice returns the same id.
  int declare_site_extra(const std::string& name, const std::string& unit, const std::string& meaning);
  int declare_linear_extra(const std::string& name, const std::string& unit, const std::string& meaning);
  const std::vector<Extra>& extras() const { return extras_; }

  // Per-linear extras of the current step ([extra][linear], NaN where not set). The
  // runner points this at the step's record; null when this batch is not recorded.
  std::vector<std::vector<double>>* linear_extra = nullptr;
  void set_linear_extra(int extra, int linear, double value);
  // Per-site extras of the current step ([extra][site]), for components that see no
  // SiteCall (an ops layer); null when this batch is not recorded.
  std::vector<std::vector<double>>* site_extra = nullptr;
  void set_site_extra(int extra, int site, double value);
  // A component's own work that no site counts (an ops layer's verification projections, a
  // cache recomputing part of an attention): FLOPs added to the current step's count. Set
  // by the runner; null outside a run.
  std::function<void(double)> add_flops;
  // Mixed precision: per block, the bits a quantizer (ops layer) uses for that block's
  // linears in the coming calls; 0 or absent = its default. A site layer (`sixbit`) sets it.
  std::vector<int> block_bits;

 private:
  int declare(const std::string& name, const std::string& unit, const std::string& meaning, bool per_linear);
  std::vector<Extra> extras_;
};

class Calibrator;

// Reuse of classifier-free guidance's unconditional branch (FasterCache's CFG-Cache), asked by
// the guidance component (CfgGuidance) at every guided evaluation of the run's layers.
class GuidanceCache {
 public:
  virtual ~GuidanceCache() = default;
  // Whether this evaluation runs the conditional half only (called once per evaluation).
  virtual bool skip_unconditional() = 0;
  // After skip_unconditional() said yes: the unconditional output estimated from the
  // conditional one (the model's output, [B, C, ...]).
  virtual at::Tensor estimate_unconditional(const at::Tensor& cond) = 0;
  // After a full evaluation: both halves.
  virtual void observe(const at::Tensor& cond, const at::Tensor& uncond) = 0;
};

class SiteLayer {
 public:
  virtual ~SiteLayer() = default;
  // Called before every trajectory (every batch): resets all state.
  virtual void begin_run(RunContext& ctx) = 0;
  virtual void begin_step(const StepIndex& step) { (void)step; }
  // The layer's answer for one site call. The default passes through.
  virtual Tensors at(SiteCall& call, const Next& next) { return next(call); }
  virtual bool wants_tap(int tap) const { (void)tap; return false; }
  virtual void tap(int tap, const at::Tensor& value) { (void)tap, (void)value; }
  // After the step: what every site did (Decision as uint8; Skipped for sites no call
  // reached because an enclosing site was not computed).
  virtual void end_step(const std::vector<uint8_t>& decisions) { (void)decisions; }
  // A layer fitted by `cachelab calibrate` returns its calibrator (nested layers forward).
  virtual Calibrator* calibrator() { return nullptr; }
  // Every calibrator of this layer and the layers inside it, innermost first (a corrector
  // around a corrector is fitted with the inner one applied).
  virtual void calibrators(std::vector<Calibrator*>& out) {
    if (Calibrator* c = calibrator()) out.push_back(c);
  }
  // A layer that reuses guidance's unconditional branch returns itself (nested layers forward).
  virtual GuidanceCache* guidance_cache() { return nullptr; }
};

// A component fitted from runs: calibration mode on, run trajectories, then save.
class Calibrator {
 public:
  virtual ~Calibrator() = default;
  virtual void start_calibration() = 0;
  virtual std::string finish_calibration() = 0;  // writes its file; returns a summary line
  // The file it writes: a calibration run is skipped when an earlier run of the same
  // `cachelab calibrate` already wrote this file.
  virtual std::string calibration_file() const = 0;
  // While a calibrator inside this one is fitted, this one is held: it passes its inner
  // layer's answers through untouched and reads no file (it may not exist yet).
  virtual void hold(bool on) { (void)on; }
};

// A site layer around an optional inner one (correctors, masks, layers that steer a
// quantizer): taps, step ends and calibration pass on to the inner layer.
class NestingLayer : public SiteLayer {
 public:
  bool wants_tap(int tap) const override { return inner_ && inner_->wants_tap(tap); }
  void tap(int tap, const at::Tensor& value) override {
    if (inner_) inner_->tap(tap, value);
  }
  void end_step(const std::vector<uint8_t>& decisions) override {
    if (inner_) inner_->end_step(decisions);
  }
  Calibrator* calibrator() override { return inner_ ? inner_->calibrator() : nullptr; }
  GuidanceCache* guidance_cache() override { return inner_ ? inner_->guidance_cache() : nullptr; }
  void calibrators(std::vector<Calibrator*>& out) override {
    if (inner_) inner_->calibrators(out);
    Calibrator* mine = calibrator();
    if (mine && (out.empty() || out.back() != mine)) out.push_back(mine);
  }

 protected:
  std::unique_ptr<SiteLayer> inner_;
};

// A corrector: a nesting layer fitted by `cachelab calibrate` (dec, vc, interval_adjust).
// While held it passes its inner layer's answers through (held_).
class Corrector : public NestingLayer, public Calibrator {
 public:
  Calibrator* calibrator() override { return this; }
  void hold(bool on) override { held_ = on; }

 protected:
  bool held_ = false;
};

// A cache policy is a site layer; the name says what it is for.
using CachePolicy = SiteLayer;

}  // namespace cachelab
