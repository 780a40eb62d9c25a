// `ptq`: post-training fake quantization of a backbone's linear layers, for accuracy studies
// of any scheme (W8A8, W6A6, W4A8, W4A16, ...). An ops layer: the model never knows it.
//
// Weights: `weight_bits`, per `weight_granularity` (tensor | channel | group of
// `group_size` input features), symmetric or not, clipping range by `weight_calibrator`
// (minmax | percentile | mse; see quant/quantize.h), quantized once when the run starts.
// Activations (each linear's input): `act_bits` (16 = left in float: W4A16), per tensor with
// a static range calibrated by `act_calibrator` from calibration runs, or per token with a
// dynamic min-max range per row (no calibration). Timestep-aware calibration
// (Q-Diffusion, ViDiT-Q): calibration activations are drawn across the whole trajectory
// (`calibration_steps` steps spread evenly, 0 = every step) and the steps are split into
// `timestep_groups` contiguous ranges, each with its own activation range.
//
// Calibration samples under caching (Q&C's temporal-aware parallel clustering, our reading):
// with `calibration_select: tap`, each timestep group's (step, sample) pairs are described by
// every linear's input min and max (standardised) and the step, clustered by k-means into
// `tap_clusters` clusters, and only each cluster's medoid calibrates that group's ranges.
//
// Temporal features (Temporal Feature Matters): the linears named by `temporal_layers`
// (time embedding MLP, adaLN modulation) see only the timestep and the class, so their
// outputs can be pre-computed per step in full precision and looked up (the paper's
// cache-based maintenance). `temporal: exact` computes them in full precision (the same
// numbers as the table); `quantize` quantizes them like any other selected linear; `auto`
// keeps exact each temporal linear whose quantization error measured at calibration (the
// relative L2 error of its output over every calibration call) exceeds `temporal_tolerance`
// (disturbance-aware selection, per module).
//
// Mixed precision (6Bit-Diffusion): with `low_bits` > 0, a site layer (`sixbit`) chooses per
// block and step whether the block's linears use `weight_bits` or `low_bits` weights and
// activations (RunContext::block_bits); without it every block uses `weight_bits`.
//
// Calibration (`cachelab calibrate EXP.yaml`) runs the variant's trajectory in full precision
// and writes `calibration` (safetensors): `<linear>.act_range` float32 [G, 2] (lo, hi per
// timestep group) and, for temporal linears, `<linear>.temporal_err` float32 [1]; metadata
// holds the backbone digest (a file fitted on other weights is refused), the step count and
// every option the ranges depend on (a file made with other settings is refused; with
// `temporal: auto`, the weight scheme the temporal errors were measured with too).
//
// Quantization-error correction (CacheQuant's DEC applied to the quantizer; `correct: true`):
// calibration then takes two runs, the first observing ranges in full precision, the second
// quantized, fitting per output channel y_fp ~ a y_q + b by least squares over every call
// (stored as `<linear>.correct_a` / `.correct_b`); at run time the quantized output becomes
// a y_q + b (at `weight_bits`; low-bit blocks of mixed precision are not corrected).
//
// Logged per step: /linears/extra/quant_err_rel [T, L] (relative L2 error of each quantized
// linear's output against full precision on the batch's first sample, over the step's calls)
// and /linears/extra/weight_bits [T, L] (the bits the linear used; NaN = full precision).
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "framework/layer.h"
#include "framework/multi_run.h"
#include "framework/ops.h"

namespace cachelab {

struct PtqOptions {
  int weight_bits = 8;
  std::string weight_granularity = "channel";
  int group_size = 32;
  bool weight_symmetric = true;
  std::string weight_calibrator = "minmax";
  int act_bits = 8;
  std::string act_granularity = "tensor";
  bool act_symmetric = false;
  std::string act_calibrator = "minmax";
  double percentile = 99.99;
  int timestep_groups = 1;
  int calibration_steps = 0;
  int calibration_values = 2048;
  std::string calibration_select = "all";
  int tap_clusters = 16;
  std::vector<std::string> layers = {"blocks"};
  std::string temporal = "quantize";
  std::vector<std::string> temporal_layers = {"t_embedder", "adaLN_modulation", ".emb"};
  double temporal_tolerance = 0.02;
  int low_bits = 0;
  bool correct = false;
  std::string calibration = "results/calib/ptq.safetensors";
  template <class V>
  void fields(V& v) {
    v("weight_bits", weight_bits, "weight bit width: 4, 6 or 8");
    v("weight_granularity", weight_granularity,
      "one weight scale per `tensor`, per output `channel`, or per `group` of group_size input features");
    v("group_size", group_size, "input features per weight group (weight_granularity: group); must divide them");
    v("weight_symmetric", weight_symmetric, "symmetric weights (zero point 0) or asymmetric (min to max)");
    v("weight_calibrator", weight_calibrator, "weight clipping range: minmax, percentile or mse");
    v("act_bits", act_bits, "activation bit width: 4, 6 or 8; 16 leaves activations in float (W4A16)");
    v("act_granularity", act_granularity,
      "`tensor`: one calibrated static range per linear (and timestep group); `token`: a dynamic range per row");
    v("act_symmetric", act_symmetric, "symmetric activations, or asymmetric with a zero point");
    v("act_calibrator", act_calibrator, "activation clipping range: minmax, percentile or mse");
    v("percentile", percentile, "the percentile kept by the percentile calibrators, in (50, 100]");
    v("timestep_groups", timestep_groups,
      "contiguous step ranges with their own activation range (timestep-aware calibration); 1 = one range");
    v("calibration_steps", calibration_steps,
      "steps (spread evenly over the trajectory) whose activations calibrate; 0 = every step");
    v("calibration_values", calibration_values,
      "activation values kept per linear call for the percentile / mse calibrators (evenly strided)");
    v("calibration_select", calibration_select,
      "`all` calibration samples, or `tap`: per timestep group, the medoids of tap_clusters k-means clusters of the "
      "(step, sample) pairs (Q&C's temporal-aware clustering)");
    v("tap_clusters", tap_clusters, "tap: clusters (= calibration pairs kept) per timestep group");
    v("layers", layers, "linears to quantize: `blocks` (every linear inside a block), `all`, roles (qkv, proj, cross_q, "
                        "cross_kv, cross_proj, fc1, fc2, modulation, time_embed, embed, head) or name substrings");
    v("temporal", temporal,
      "the temporal linears (time embedding, modulation): quantize, exact (pre-computable: full precision) or "
      "auto (exact where their calibrated error exceeds temporal_tolerance)");
    v("temporal_layers", temporal_layers, "the temporal linears, by role (time_embed, modulation) or name substring; the "
                                          "default names the DiT's and the U-Net's, on other models set [time_embed, modulation]");
    v("temporal_tolerance", temporal_tolerance, "auto: relative output error above which a temporal linear stays exact");
    v("low_bits", low_bits,
      "mixed precision: the lower bit width a `sixbit` site layer may give a block per step (0 = off; 4)");
    v("correct", correct,
      "CacheQuant's decoupled correction of the quantization error: y = a y_q + b per output channel, fitted "
      "against full precision along a second, quantized calibration run");
    v("calibration", calibration, "activation ranges file (relative to the project root), written by `cachelab calibrate`");
  }
  template <class C>
  void check(C& c) const {
    c.require(weight_bits == 4 || weight_bits == 6 || weight_bits == 8, "weight_bits", "must be 4, 6 or 8");
    c.one_of("weight_granularity", weight_granularity, {"tensor", "channel", "group"});
    c.require(group_size > 0, "group_size", "must be positive (e.g. 32)");
    c.one_of("weight_calibrator", weight_calibrator, {"minmax", "percentile", "mse"});
    c.require(act_bits == 4 || act_bits == 6 || act_bits == 8 || act_bits == 16, "act_bits",
              "must be 4, 6, 8, or 16 (float activations)");
    c.one_of("act_granularity", act_granularity, {"tensor", "token"});
    c.one_of("act_calibrator", act_calibrator, {"minmax", "percentile", "mse"});
    c.require(act_granularity == "tensor" || act_calibrator == "minmax", "act_calibrator",
              "per-token activations take each row's min-max at run time; use act_calibrator: minmax");
    c.require(percentile > 50 && percentile <= 100, "percentile", "must be in (50, 100], e.g. 99.99");
    c.require(timestep_groups >= 1, "timestep_groups", "must be at least 1");
    c.require(calibration_steps >= 0, "calibration_steps", "must be 0 (every step) or a step count");
    c.require(calibration_values >= 16, "calibration_values", "must be at least 16");
    c.one_of("calibration_select", calibration_select, {"all", "tap"});
    c.require(tap_clusters >= 1, "tap_clusters", "must be at least 1");
    c.require(!layers.empty(), "layers", "must select at least one linear (e.g. [blocks])");
    for (auto& l : layers) c.require(!l.empty(), "layers", "entries must not be empty");
    c.one_of("temporal", temporal, {"quantize", "exact", "auto"});
    c.require(temporal_tolerance > 0, "temporal_tolerance", "must be positive (e.g. 0.02)");
    c.require(low_bits == 0 || (low_bits >= 2 && low_bits < weight_bits), "low_bits",
              "must be 0 (no mixed precision) or below weight_bits (e.g. 4 with weight_bits 8)");
    c.require(!calibration.empty(), "calibration", "must name a file (e.g. results/calib/ptq-dit-mnist.safetensors)");
  }
};

class PtqOps final : public Ops, public Calibrator, public MultiRunCalibrator {
 public:
  explicit PtqOps(const PtqOptions& o);
  ~PtqOps() override;
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;
  void begin_step(const StepIndex& step) override;
  void end_step() override;
  at::Tensor linear(int id, const at::Tensor& x) override;

  // Fitted only when something needs calibrating (static activation ranges, temporal: auto).
  Calibrator* calibrator() override;
  void start_calibration() override;
  std::string finish_calibration() override;
  std::string calibration_file() const override { return o_.calibration; }
  // With `correct`: after the observing run, one quantized run fits the correction.
  bool another_run(double flops, const at::Tensor& samples) override;

  // After begin_run, per linear: 0 = full precision, else its (default) weight bits.
  std::vector<int> bits() const;
  bool needs_calibration() const;

 private:
  struct State;
  void load();
  void fit_ranges();
  std::string temporal_weights() const;  // the weight scheme temporal errors depend on
  void prepare(const std::vector<LinearRef>& linears);
  at::Tensor quantized(int id, const at::Tensor& x, int bits);

  PtqOptions o_;
  std::string path_;
  RunContext* ctx_ = nullptr;
  int err_extra_ = -1, bits_extra_ = -1;
  bool observing_ = false, correcting_ = false;
  std::vector<bool> temporal_;  // per linear of the bound table: selected by temporal_layers
  std::unique_ptr<State> s_;
};

}  // namespace cachelab
