// W8A8 post-training quantization of a backbone's linear layers, as an ops layer.
//
// Weights: per-output-channel symmetric int8, scale = absmax(row) / 127, zero point 0
// (the only weight scheme oneDNN's int8 linear accepts). Activations (the linear's input):
// per-tensor asymmetric uint8 with a zero point (what oneDNN's u8 x s8 kernels take), over
// a range widened to include 0; scale and zero point follow PyTorch's
// ChooseQuantizationParams. The range, by `activations`:
//  - static (default): min-max over every call of a calibration trajectory (all timesteps,
//    both halves of the guidance batch), read from the `calibration` file; inputs are
//    clamped to it.
//  - dynamic: min-max of each call's own input (the whole tensor: every row of the batch,
//    both guidance halves), so nothing is clamped and no calibration file is read (or
//    written: `cachelab calibrate` skips a dynamic w8a8). Costs a min-max pass per call,
//    and in int8 mode LibTorch 1.13's oneDNN path pays extra for every activation scale it
//    has not seen before (every call, in sampling): measured ~0.2 ms per call on dit-mnist's
//    linears, more than their GEMM, so dynamic int8 is slower than static here (README).
// With `reduce_range` (default) activations use 0..127: on CPUs
// without VNNI (AVX2, as here) oneDNN multiplies u8 x s8 pairs with vpmaddubsw, whose
// int16 pair sums saturate for full 8-bit inputs (measured: 3% relative output error);
// 7-bit inputs cannot saturate. PyTorch's own x86 default makes the same choice.
//
// Default layer selection (`layers: [blocks]`) follows the DiT PTQ papers (Q-Diffusion,
// PTQ4DiT): every linear inside the blocks (qkv, proj, fc1, fc2, adaLN modulation) is
// quantized; the timestep embedder and the final layer stay in full precision.
// Unselected linears and every attention pass to the inner ops untouched.
//
// Modes (same quantized values in both, static or dynamic):
//  - fake: clamp x to the range, quantize-dequantize, then a float GEMM with the
//    dequantized weight (any device and dtype; for accuracy studies). Dynamic fake takes
//    the range from the call's input exactly as the int8 kernel does (min and max of x).
//  - int8: LibTorch's oneDNN int8 linear (quantized::linear_prepack / linear_dynamic via the
//    dispatcher; CPU, float32). The dynamic kernel picks its activation range from its
//    input's min and max and returns float32 (no output requantisation): that is
//    `activations: dynamic` as it is. For `static`, one extra input row holding the
//    calibrated min and max (the input clamped to them) makes that range the calibrated
//    one, so the kernel runs the static calibrated scheme of `fake`; the extra row's output
//    is dropped (cost: a clamp copy of the input and one row of M).
//
// Calibration (`cachelab calibrate`, or start_calibration / a trajectory / finish_calibration):
// every linear (selected or not) computes in full precision through the inner ops while its
// input min and max are recorded; finish_calibration writes them to the `calibration`
// safetensors file: `<linear>.input_range` float32 [2] (min, max as observed) and
// `<linear>.weight_absmax` float32 [1] (a fingerprint: loading with other weights is an error).
//
// Logged per step on the recorded batch (unless `log_error: false`):
// /linears/extra/quant_err_rel [T, L], the relative L2 error ||y_q - y_fp|| / ||y_fp|| of
// each quantized linear's output on the first sample of the batch (x[0]; the conditional
// half with guidance), summed over the step's calls; y_fp is the full-precision linear on
// that one sample (about 1/(2B) extra linear FLOPs on the recorded batch, which is also the
// batch `speedup_wall` times: half the linears' work again at batch 1). NaN for linears not
// quantized or not called in the step.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "framework/layer.h"
#include "framework/ops.h"

namespace cachelab {

struct W8A8Options {
  std::string mode = "fake";                                   // fake | int8
  std::string calibration = "results/calib/w8a8.safetensors";  // relative to the project root
  std::string activations = "static";                          // static | dynamic (see above)
  std::vector<std::string> layers = {"blocks"};                // which linears to quantize
  bool reduce_range = true;                                    // activations 0..127 (see above)
  bool log_error = true;                                       // log quant_err_rel (see above)
  template <class V>
  void fields(V& v) {
    v("mode", mode, "fake (quantize-dequantize in float, any device) or int8 (oneDNN int8 kernels, CPU float32)");
    v("activations", activations,
      "activation range: static (calibrated min-max, from `calibration`) or dynamic (each call's own min-max)");
    v("calibration", calibration,
      "activation ranges file (safetensors, relative to the project root), written by `cachelab calibrate`; "
      "not read with activations: dynamic");
    v("layers", layers,
      "linears to quantize: `blocks` = every linear inside a block, `all`, roles (qkv, proj, cross_q, cross_kv, "
      "cross_proj, fc1, fc2, modulation, time_embed, embed, head) or substrings of checkpoint names");
    v("reduce_range", reduce_range,
      "7-bit activations (0..127) so int8 kernels cannot saturate on CPUs without VNNI; false = 0..255");
    v("log_error", log_error,
      "log /linears/extra/quant_err_rel (one fp32 linear on one sample per call: turn off to time small batches)");
  }
  template <class C>
  void check(C& c) const {
    c.one_of("mode", mode, {"fake", "int8"});
    c.one_of("activations", activations, {"static", "dynamic"});
    c.require(activations == "dynamic" || !calibration.empty(), "calibration",
              "must name a file (e.g. results/calib/w8a8-dit-mnist.safetensors) with activations: static");
    c.require(!layers.empty(), "layers", "must select at least one linear (e.g. [blocks])");
    for (auto& l : layers) c.require(!l.empty(), "layers", "entries must not be empty");
  }
};

// Per-output-channel symmetric int8 weight: q int8 [out, in] in [-127, 127], scale float32
// [out] (absmax / 127; 1 for an all-zero row), w ~ q * scale[:, None].
struct QuantizedWeight {
  at::Tensor q, scale;
};
QuantizedWeight quantize_weight(const at::Tensor& weight);
at::Tensor dequantize_weight(const QuantizedWeight& w);  // float32 [out, in]

// Per-tensor affine activation quantization from a calibrated range.
struct ActQuant {
  float lo = 0, hi = 0;  // the calibrated range widened to include 0 (inputs are clamped to it)
  double scale = 1;      // x ~ (q - zero_point) * scale
  int zero_point = 0;
  int qmax = 255;        // q in [0, qmax]: 127 with reduce_range
};
ActQuant act_quant(float min, float max, bool reduce_range);
// The range and parameters quantized::linear_dynamic picks for input x: its min and max.
ActQuant dynamic_act_quant(const at::Tensor& x, bool reduce_range);
// clamp(x, lo, hi) quantized and dequantized (float32), rounding exactly as oneDNN's
// int8 linear does: round_half_even(float(x * float(1/scale)) + zero_point).
at::Tensor fake_quantize(const at::Tensor& x, const ActQuant& a);

class W8A8Ops final : public Ops, public Calibrator {
 public:
  explicit W8A8Ops(const W8A8Options& o);
  ~W8A8Ops() override;
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;
  void begin_step(const StepIndex& step) override;
  void end_step() override;
  at::Tensor linear(int id, const at::Tensor& x) override;

  // Only static activations are calibrated (a dynamic w8a8 has nothing to fit).
  Calibrator* calibrator() override { return dynamic_ ? nullptr : this; }
  void start_calibration() override;
  std::string finish_calibration() override;  // writes the file; back to quantized mode
  std::string calibration_file() const override { return o_.calibration; }

  // Per linear of the bound backbone: is it quantized (after begin_run).
  const std::vector<bool>& selected() const { return selected_; }
  const std::string& calibration_path() const { return path_; }

 private:
  struct State;
  void load_ranges();
  void prepare(const std::vector<LinearRef>& linears);
  at::Tensor quantized_linear(int id, const at::Tensor& x);

  W8A8Options o_;
  bool dynamic_ = false;  // activations: dynamic
  std::string path_;      // resolved calibration path
  std::vector<bool> selected_;
  RunContext* ctx_ = nullptr;
  int err_extra_ = -1;
  bool observing_ = false;
  std::unique_ptr<State> s_;
};

}  // namespace cachelab
