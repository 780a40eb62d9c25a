#include "quant/w8a8.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <ATen/native/quantized/cpu/QuantUtils.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"
#include "quant/quantize.h"

namespace cachelab {
namespace {

namespace fs = std::filesystem;
using Packed = c10::intrusive_ptr<LinearPackedParamsBase>;

constexpr int kWeightQmax = 127;  // symmetric int8 weights use [-127, 127]
constexpr const char* kFormat = "cachelab w8a8 calibration 1";
constexpr const char* kRangeSuffix = ".input_range";
constexpr const char* kAbsmaxSuffix = ".weight_absmax";
// A file whose weight fingerprint is off by more than this was made for other weights
// (bfloat16 copies of the same weights stay within 0.4%).
constexpr double kFingerprintTolerance = 0.01;

// The LibTorch int8 linear through the dispatcher (handles looked up once).
Packed linear_prepack(const at::Tensor& qweight, const at::Tensor& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("quantized::linear_prepack", "")
                       .typed<Packed(at::Tensor, c10::optional<at::Tensor>)>();
  return op.call(qweight, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
}
at::Tensor linear_dynamic(const at::Tensor& x, const Packed& w, bool reduce_range) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("quantized::linear_dynamic", "")
                       .typed<at::Tensor(at::Tensor, const Packed&, bool)>();
  return op.call(x, w, reduce_range);
}

at::Tensor qint8_per_channel(const QuantizedWeight& w) {
  auto q = w.q.cpu();
  return at::_make_per_channel_quantized_tensor(q, w.scale.cpu().to(at::kDouble),
                                                at::zeros({q.size(0)}, at::kLong), /*axis=*/0);
}

// Rows [lo, hi, 0, ...] appended to the input so that the kernel's own min/max is (lo, hi).
at::Tensor anchor_rows(int64_t in_features, const ActQuant& a) {
  auto t = at::zeros({in_features >= 2 ? 1 : 2, in_features}, at::kFloat);
  auto flat = t.view({-1});
  flat[0] = a.lo;
  flat[1] = a.hi;
  return t;
}

// y = x w^T + b with x's range chosen by the kernel (activations: dynamic).
at::Tensor int8_linear_dynamic(const at::Tensor& x, const Packed& w, int64_t out_features, bool reduce_range) {
  auto y = linear_dynamic(x.reshape({-1, x.size(-1)}), w, reduce_range);
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  return y.view(sizes);
}

// The same with the calibrated range `a` (activations: static): anchor rows fix the range.
at::Tensor int8_linear(const at::Tensor& x, const Packed& w, const ActQuant& a, const at::Tensor& anchor,
                       int64_t out_features, bool reduce_range) {
  const int64_t K = x.size(-1);
  auto x2 = x.reshape({-1, K});
  const int64_t M = x2.size(0);
  auto buf = at::empty({M + anchor.size(0), K}, x.options());
  auto top = buf.narrow(0, 0, M);
  at::clamp_out(top, x2, a.lo, a.hi);
  buf.narrow(0, M, anchor.size(0)).copy_(anchor);
  auto y = linear_dynamic(buf, w, reduce_range).narrow(0, 0, M);  // the first M rows: contiguous
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  return y.view(sizes);
}

// True when the oneDNN kernel computes a full 8-bit u8 x s8 dot product exactly (VNNI);
// false when its int16 pair sums saturate (AVX2's vpmaddubsw).
bool int8_kernel_exact_at_full_range() {
  static const bool exact = [] {
    const int64_t K = 64;
    auto qw = quantize_weight(at::ones({1, K}));  // q = 127, scale 1/127
    auto packed = linear_prepack(qint8_per_channel(qw), at::Tensor());
    auto x = at::ones({2, K});
    x[1].zero_();  // range [0, 1]: 1 quantizes to 255 without reduce_range
    const double y = linear_dynamic(x, packed, /*reduce_range=*/false)[0][0].item<double>();
    return std::fabs(y - double(K)) < 1e-3 * K;
  }();
  return exact;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

QuantizedWeight quantize_weight(const at::Tensor& weight) {
  auto w = weight.to(at::kFloat);
  auto scale = w.abs().amax(1).div_(kWeightQmax);
  scale.masked_fill_(scale == 0, 1.0);  // an all-zero row: any scale represents it
  auto q = at::clamp(at::round(w / scale.unsqueeze(1)), -kWeightQmax, kWeightQmax).to(at::kChar);
  return {q, scale};
}

at::Tensor dequantize_weight(const QuantizedWeight& w) { return w.q.to(at::kFloat) * w.scale.unsqueeze(1); }

ActQuant act_quant(float min, float max, bool reduce_range) {
  ActQuant a;
  a.lo = std::min(min, 0.0f);
  a.hi = std::max(max, 0.0f);
  // The parameters quantized::linear_dynamic derives from its input's min and max.
  auto p = quant_utils::ChooseQuantizationParams(a.lo, a.hi, 0, 255, /*preserve_sparsity=*/false,
                                                 /*force_scale_power_of_two=*/false, reduce_range);
  a.scale = p.scale;
  a.zero_point = p.zero_point;
  a.qmax = reduce_range ? 127 : 255;
  return a;
}

ActQuant dynamic_act_quant(const at::Tensor& x, bool reduce_range) {
  if (x.numel() == 0) return act_quant(0, 0, reduce_range);
  auto mm = at::aminmax(x);
  return act_quant(std::get<0>(mm).item<float>(), std::get<1>(mm).item<float>(), reduce_range);
}

at::Tensor fake_quantize(const at::Tensor& x, const ActQuant& a) {
  // oneDNN's order of operations: x * (1/scale) and + zero point, each rounded to float,
  // then round half to even. (PyTorch's fake quantizer rounds before adding the zero
  // point, which differs at a few rounding ties per layer; over 50 guided steps those
  // single-step differences grew to a 5% sample difference, so fake follows the kernel.)
  const float inv = float(1.0 / a.scale);
  return at::clamp(x.to(at::kFloat), a.lo, a.hi)
      .mul_(inv)
      .add_(a.zero_point)
      .round_()
      .clamp_(0, a.qmax)
      .sub_(a.zero_point)
      .mul_(float(a.scale));
}

struct W8A8Ops::State {
  struct Range {
    float min = 0, max = 0, weight_absmax = 0;
  };
  struct Layer {
    at::Tensor w_deq, bias;  // fake: float32 dequantized weight and bias
    Packed packed;           // int8: oneDNN's packed int8 weight, scales and bias
    at::Tensor anchor;       // int8
    ActQuant act;
    int64_t out_features = 0;
    OutputError error;       // this step's, on the recorded batch's first sample
  };
  // Calibration: per linear, the input's min and max over every call.
  std::vector<double> obs_min, obs_max;
  std::vector<int64_t> obs_calls;
  // The calibrated ranges by linear name (loaded or just calibrated).
  std::map<std::string, Range> ranges;
  bool have_ranges = false;
  // Prepared layers, for one linear table (re-prepared when the table or its weights change).
  std::vector<Layer> layers;
  const std::vector<LinearRef>* prepared_for = nullptr;
  std::vector<const void*> weight_ptrs;
};

W8A8Ops::W8A8Ops(const W8A8Options& o)
    : o_(o), dynamic_(o.activations == "dynamic"), path_(resolve_path(o.calibration)), s_(std::make_unique<State>()) {
  if (o_.mode != "int8") return;
  const auto& engines = at::globalContext().supportedQEngines();
  CL_CHECK(std::find(engines.begin(), engines.end(), at::QEngine::ONEDNN) != engines.end(),
           "w8a8: mode int8 needs LibTorch's oneDNN quantized engine, which this LibTorch lacks; use mode: fake");
  at::globalContext().setQEngine(at::QEngine::ONEDNN);
  CL_CHECK(o_.reduce_range || int8_kernel_exact_at_full_range(),
           "w8a8: reduce_range: false needs int8 kernels that do not saturate, and this CPU's (no VNNI) saturated "
           "a full-range probe; use reduce_range: true (7-bit activations) or mode: fake");
}

W8A8Ops::~W8A8Ops() = default;

void W8A8Ops::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  Ops::begin_run(linears, ctx);
  ctx_ = ctx;
  selected_.assign(linears.size(), false);
  std::string names;
  int n = 0;
  for (size_t i = 0; i < linears.size(); ++i) {
    selected_[i] = linear_matches(linears[i], o_.layers);
    n += selected_[i];
    if (i < 6) names += (i ? ", " : "") + linears[i].name;
  }
  CL_CHECK(n > 0, "w8a8: `layers` selects none of this backbone's linears (" << names << ", ...); use `blocks`, "
                                                                              "`all`, roles (qkv, fc1, ...) or substrings of their names");
  if (observing_) {
    if (s_->obs_calls.size() != linears.size()) {
      CL_CHECK(s_->obs_calls.empty(), "w8a8: one calibration saw two backbones with different linear tables");
      s_->obs_min.assign(linears.size(), std::numeric_limits<double>::infinity());
      s_->obs_max.assign(linears.size(), -std::numeric_limits<double>::infinity());
      s_->obs_calls.assign(linears.size(), 0);
    }
    return;
  }
  if (ctx && o_.log_error)
    err_extra_ = ctx->declare_linear_extra(
        "quant_err_rel", "ratio",
        "||y_q - y_fp|| / ||y_fp|| of the quantized linear's output on the batch's first sample, over the step's calls");
  if (!dynamic_ && !s_->have_ranges) load_ranges();
  prepare(linears);
}

void W8A8Ops::load_ranges() {
  CL_CHECK(fs::exists(path_), "w8a8: no calibration file at `" << path_ << "` (calibration: " << o_.calibration
                                                               << ", relative to the project root); make it with "
                                                                  "`cachelab calibrate EXP.yaml`");
  SafetensorsFile f = read_safetensors(path_);
  auto fmt = f.metadata.find("format");
  CL_CHECK(fmt != f.metadata.end() && fmt->second == kFormat,
           "w8a8: `" << path_ << "` is not a w8a8 calibration file; make it with `cachelab calibrate EXP.yaml`");
  s_->ranges.clear();
  for (auto& [name, t] : f.tensors) {
    auto v = t.to(at::kFloat).contiguous();
    if (ends_with(name, kRangeSuffix)) {
      CL_CHECK(v.numel() == 2, "w8a8: `" << path_ << "`: " << name << " must hold [min, max]");
      auto& r = s_->ranges[name.substr(0, name.size() - std::strlen(kRangeSuffix))];
      r.min = v[0].item<float>();
      r.max = v[1].item<float>();
    } else if (ends_with(name, kAbsmaxSuffix)) {
      s_->ranges[name.substr(0, name.size() - std::strlen(kAbsmaxSuffix))].weight_absmax = v.item<float>();
    }
  }
  s_->have_ranges = true;
  s_->prepared_for = nullptr;
}

void W8A8Ops::prepare(const std::vector<LinearRef>& linears) {
  bool same = s_->prepared_for == &linears && s_->weight_ptrs.size() == linears.size();
  for (size_t i = 0; same && i < linears.size(); ++i) same = s_->weight_ptrs[i] == linears[i].weight.data_ptr();
  if (same) return;
  c10::NoGradGuard no_grad;  // begin_run may come outside the runner's inference mode
  const bool int8 = o_.mode == "int8";
  if (int8) at::globalContext().setQEngine(at::QEngine::ONEDNN);
  s_->layers.assign(linears.size(), State::Layer());
  s_->weight_ptrs.clear();
  for (size_t i = 0; i < linears.size(); ++i) {
    const LinearRef& l = linears[i];
    s_->weight_ptrs.push_back(l.weight.data_ptr());
    if (!selected_[i]) continue;
    State::Layer& q = s_->layers[i];
    if (!dynamic_) {
      auto r = s_->ranges.find(l.name);
      CL_CHECK(r != s_->ranges.end(), "w8a8: `" << path_ << "` has no activation range for linear `" << l.name
                                                << "` (calibrated for another backbone, or the layer was never called); "
                                                   "re-run `cachelab calibrate EXP.yaml`");
      const double absmax = l.weight.abs().max().item<double>();
      CL_CHECK(std::fabs(absmax - r->second.weight_absmax) <= kFingerprintTolerance * std::max(absmax, 1e-12),
               "w8a8: `" << path_ << "` was calibrated with other weights (linear `" << l.name << "`: weight absmax "
                         << absmax << " here, " << r->second.weight_absmax
                         << " in the file); re-run `cachelab calibrate EXP.yaml`");
      q.act = act_quant(r->second.min, r->second.max, o_.reduce_range);
    }
    const QuantizedWeight w = quantize_weight(l.weight);
    q.out_features = l.weight.size(0);
    if (int8) {
      CL_CHECK(l.weight.device().is_cpu(), "w8a8: mode int8 runs on the CPU (oneDNN); use mode: fake on "
                                               << l.weight.device());
      q.packed = linear_prepack(qint8_per_channel(w), l.bias.defined() ? l.bias.to(at::kFloat) : at::Tensor());
      if (!dynamic_) q.anchor = anchor_rows(l.weight.size(1), q.act);
    } else {
      q.w_deq = dequantize_weight(w);
      if (l.bias.defined()) q.bias = l.bias.to(at::kFloat);
    }
  }
  s_->prepared_for = &linears;
}

void W8A8Ops::begin_step(const StepIndex& step) {
  for (auto& q : s_->layers) q.error = OutputError();
  Ops::begin_step(step);
}

void W8A8Ops::end_step() {
  if (ctx_ && ctx_->linear_extra && err_extra_ >= 0 && !observing_)
    for (size_t i = 0; i < s_->layers.size(); ++i) {
      const auto& q = s_->layers[i];
      if (!selected_[i] || q.error.calls == 0) continue;
      ctx_->set_linear_extra(err_extra_, int(i), q.error.rel());
    }
  Ops::end_step();
}

at::Tensor W8A8Ops::quantized_linear(int id, const at::Tensor& x) {
  State::Layer& q = s_->layers[size_t(id)];
  if (o_.mode == "int8") {
    CL_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat,
             "w8a8: mode int8 runs on float32 CPU tensors (oneDNN), got " << x.scalar_type() << " on " << x.device()
                                                                          << "; use mode: fake");
    if (dynamic_) return int8_linear_dynamic(x, q.packed, q.out_features, o_.reduce_range);
    return int8_linear(x, q.packed, q.act, q.anchor, q.out_features, o_.reduce_range);
  }
  const ActQuant a = dynamic_ ? dynamic_act_quant(x, o_.reduce_range) : q.act;
  return dense_linear(fake_quantize(x, a), q.w_deq, q.bias).to(x.scalar_type());
}

at::Tensor W8A8Ops::linear(int id, const at::Tensor& x) {
  if (observing_) {
    auto mm = at::aminmax(x);
    const size_t i = size_t(id);
    s_->obs_min[i] = std::min(s_->obs_min[i], std::get<0>(mm).item<double>());
    s_->obs_max[i] = std::max(s_->obs_max[i], std::get<1>(mm).item<double>());
    ++s_->obs_calls[i];
    return Ops::linear(id, x);
  }
  if (!selected_[size_t(id)]) return Ops::linear(id, x);
  auto y = quantized_linear(id, x);
  if (ctx_ && ctx_->linear_extra && err_extra_ >= 0) {
    // The error on the batch's first sample, against the full-precision linear (not the
    // inner ops: a stateful inner ops must see each call once).
    const LinearRef& l = (*linears_)[size_t(id)];
    s_->layers[size_t(id)].error.add(y.narrow(0, 0, 1), dense_linear(x.narrow(0, 0, 1), l.weight, l.bias));
  }
  return y;
}

void W8A8Ops::start_calibration() {
  observing_ = true;
  s_->obs_min.clear();
  s_->obs_max.clear();
  s_->obs_calls.clear();
}

std::string W8A8Ops::finish_calibration() {
  CL_CHECK(observing_, "w8a8: finish_calibration without start_calibration");
  CL_CHECK(linears_ && !s_->obs_calls.empty(),
           "w8a8: the calibration saw no forward pass; run a trajectory between start and finish");
  const auto& linears = *linears_;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  s_->ranges.clear();
  int64_t calls = 0;
  size_t widest = 0;
  for (size_t i = 0; i < linears.size(); ++i) {
    if (s_->obs_calls[i] == 0) continue;
    State::Range r;
    r.min = float(s_->obs_min[i]);
    r.max = float(s_->obs_max[i]);
    r.weight_absmax = linears[i].weight.abs().max().item<float>();
    s_->ranges[linears[i].name] = r;
    tensors.emplace_back(linears[i].name + kRangeSuffix, at::tensor({r.min, r.max}, at::kFloat));
    tensors.emplace_back(linears[i].name + kAbsmaxSuffix, at::tensor({r.weight_absmax}, at::kFloat));
    calls = std::max(calls, s_->obs_calls[i]);
    if (s_->obs_max[i] - s_->obs_min[i] > s_->obs_max[widest] - s_->obs_min[widest] || s_->obs_calls[widest] == 0)
      widest = i;
  }
  std::error_code ec;
  fs::create_directories(fs::path(path_).parent_path(), ec);
  write_safetensors(path_, tensors,
                    {{"format", kFormat},
                     {"linears", std::to_string(tensors.size() / 2)},
                     {"calls_per_linear", std::to_string(calls)}});
  observing_ = false;
  s_->have_ranges = true;
  s_->prepared_for = nullptr;
  std::ostringstream os;
  os << "w8a8: input ranges of " << tensors.size() / 2 << " linears over up to " << calls << " calls (widest: "
     << linears[widest].name << " [" << s_->obs_min[widest] << ", " << s_->obs_max[widest] << "]) -> " << path_;
  return os.str();
}

}  // namespace cachelab
