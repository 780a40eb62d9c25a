#include "quant/ptq.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "framework/affine_fit.h"
#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"
#include "quant/quantize.h"

namespace cachelab {
namespace {

namespace fs = std::filesystem;
constexpr const char* kFormat = "cachelab ptq calibration 1";
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

struct PtqOps::State {
  // One calibration sample's input to one linear call (dim 0 of the input is the sample).
  struct Obs {
    int step = 0, group = 0;
    int64_t sample = 0;  // batch * 2^20 + row
    float mn = 0, mx = 0;
    at::Tensor values;   // evenly strided values of the row
  };
  struct Loaded {
    at::Tensor range, range_low;  // [G, 2]
    at::Tensor correct_a, correct_b;  // [out] (correct)
    double temporal_err = kNaN;
  };
  struct Layer {
    bool quant = false, temporal = false;
    at::Tensor w_hi, w_lo, bias;
    std::vector<std::pair<float, float>> range, range_low;  // per timestep group (static per-tensor activations)
    at::Tensor correct_a, correct_b;
    AffineSums correction;        // correct: y_fp ~ a y_q + b, sums over the correction run's rows
    OutputError error;  // this step's, on the recorded batch's first sample
    int bits_used = 0;
  };
  // Calibration.
  std::vector<std::vector<Obs>> obs;                                 // [linear]
  std::vector<std::vector<std::pair<int, at::Tensor>>> temporal_in;  // [linear] (group, input)
  int64_t calls = 0;
  // Loaded or just fitted.
  std::map<std::string, Loaded> loaded;
  std::map<std::string, std::string> meta;
  bool have_file = false;
  // The layers are prepared for this linear table, these weights and this state of `loaded`.
  const std::vector<LinearRef>* prepared_for = nullptr;
  std::vector<const void*> weight_ptrs;
  bool prepared = false;
  std::vector<Layer> layers;
  int group = 0, step = 0, batch = -1;
  bool record = true;
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // what the file will hold
  std::string summary;
  std::string run_digest;  // of the run being calibrated (its context is gone at finish)
  int run_steps = 0;
};

PtqOps::PtqOps(const PtqOptions& o) : o_(o), path_(resolve_path(o.calibration)), s_(std::make_unique<State>()) {}
PtqOps::~PtqOps() = default;

bool PtqOps::needs_calibration() const {
  return (o_.act_bits < 16 && o_.act_granularity == "tensor") || o_.temporal == "auto" || o_.correct;
}

Calibrator* PtqOps::calibrator() { return needs_calibration() ? this : nullptr; }

std::vector<int> PtqOps::bits() const {
  std::vector<int> b;
  for (auto& l : s_->layers) b.push_back(l.quant ? o_.weight_bits : 0);
  return b;
}

void PtqOps::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  Ops::begin_run(linears, ctx);
  ctx_ = ctx;
  int n = 0;
  std::string names;
  for (size_t i = 0; i < linears.size(); ++i) {
    n += linear_matches(linears[i], o_.layers);
    if (i < 6) names += (i ? ", " : "") + linears[i].name;
  }
  CL_CHECK(n > 0, "ptq: `layers` selects none of this backbone's linears (" << names << ", ...); use `blocks`, "
                                                                             "`all`, roles (qkv, fc1, ...) or substrings of their names");
  // The temporal linears. The default names are the DiT's and the U-Net's; on a model whose
  // timestep linears they miss (PixArt's t_block, SD's time_embed), a setting that treats
  // them apart is refused rather than silently applied to the wrong set.
  temporal_.assign(linears.size(), false);
  int by_name = 0, by_role = 0, both = 0;
  for (size_t i = 0; i < linears.size(); ++i) {
    temporal_[i] = linear_matches(linears[i], o_.temporal_layers);
    const bool role = linears[i].role == LinearRole::TimeEmbed || linears[i].role == LinearRole::Modulation;
    by_name += temporal_[i], by_role += role, both += temporal_[i] && role;
  }
  CL_CHECK(o_.temporal == "quantize" || o_.temporal_layers != PtqOptions().temporal_layers ||
               (by_name == by_role && both == by_role),
           "ptq: temporal: " << o_.temporal << " with the default temporal_layers (the DiT's and the U-Net's names) selects "
                             << by_name << " linears of this backbone, but it has " << by_role
                             << " timestep linears (roles time_embed and modulation): set temporal_layers: [time_embed, modulation]");
  if (observing_) {
    if (s_->obs.size() != linears.size()) {
      CL_CHECK(s_->obs.empty(), "ptq: one calibration saw two backbones with different linear tables");
      s_->obs.assign(linears.size(), {});
      s_->temporal_in.assign(linears.size(), {});
    }
    ++s_->batch;
    s_->run_digest = ctx ? ctx->backbone_digest : "";
    s_->run_steps = ctx ? ctx->steps : 0;
    return;
  }
  if (ctx) {
    err_extra_ = ctx->declare_linear_extra(
        "quant_err_rel", "ratio",
        "||y_q - y_fp|| / ||y_fp|| of the quantized linear's output on the batch's first sample, over the step's calls");
    bits_extra_ = ctx->declare_linear_extra("weight_bits", "bits",
                                            "the weight bit width the linear used in this step (NaN: full precision)");
  }
  if (needs_calibration() && !s_->have_file) load();
  if (s_->have_file) {
    const std::string digest = ctx ? ctx->backbone_digest : "";
    const std::string& f = s_->meta["backbone_digest"];
    CL_CHECK(f == digest, "ptq: `" << path_ << "` was calibrated on weights with digest `" << f << "`, these have `"
                                   << digest << "`; re-run `cachelab calibrate EXP.yaml`");
  }
  prepare(linears);
}

std::string PtqOps::temporal_weights() const {
  return std::to_string(o_.weight_bits) + " bits, " + o_.weight_granularity +
         (o_.weight_granularity == "group" ? " " + std::to_string(o_.group_size) : "") + ", " +
         (o_.weight_symmetric ? "symmetric" : "asymmetric") + ", " + o_.weight_calibrator;
}

void PtqOps::load() {
  CL_CHECK(fs::exists(path_), "ptq: no calibration file at `" << path_ << "` (calibration: " << o_.calibration
                                                              << ", relative to the project root); make it with "
                                                                 "`cachelab calibrate EXP.yaml`");
  SafetensorsFile f = read_safetensors(path_);
  auto fmt = f.metadata.find("format");
  CL_CHECK(fmt != f.metadata.end() && fmt->second == kFormat,
           "ptq: `" << path_ << "` is not a ptq calibration file; make it with `cachelab calibrate EXP.yaml`");
  // The settings the ranges depend on must be the ones this variant asks for.
  std::map<std::string, std::string> want = {{"act_bits", std::to_string(o_.act_bits)},
                                                   {"act_symmetric", o_.act_symmetric ? "true" : "false"},
                                                   {"act_calibrator", o_.act_calibrator},
                                                   {"percentile", num(o_.percentile)},
                                                   {"timestep_groups", std::to_string(o_.timestep_groups)},
                                                   {"low_bits", std::to_string(o_.low_bits)}};
  if (o_.correct) want["correct"] = "true";
  // Keys older files lack: their default then.
  const std::map<std::string, std::string> defaults = {{"calibration_select", "all"}, {"tap_clusters", "16"},
                                                       {"calibration_steps", "0"}};
  want["calibration_select"] = o_.calibration_select;
  want["calibration_steps"] = std::to_string(o_.calibration_steps);
  if (o_.calibration_select == "tap") want["tap_clusters"] = std::to_string(o_.tap_clusters);
  for (auto& [k, v] : defaults) f.metadata.emplace(k, v);
  if (o_.temporal == "auto") {  // the temporal errors were measured with these weights
    want["temporal_weights"] = temporal_weights();
  }
  for (auto& [k, v] : want) {
    auto it = f.metadata.find(k);
    CL_CHECK(it != f.metadata.end() && it->second == v,
             "ptq: `" << path_ << "` was calibrated with " << k << ": "
                      << (it == f.metadata.end() ? std::string("(none)") : it->second) << ", this variant has " << k
                      << ": " << v << "; give each setting its own `calibration` file and run `cachelab calibrate`");
  }
  s_->loaded.clear();
  auto strip = [](const std::string& s, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() > n && s.compare(s.size() - n, n, suffix) == 0 ? s.substr(0, s.size() - n) : std::string();
  };
  for (auto& [name, t] : f.tensors) {
    auto v = t.to(at::kFloat).contiguous();
    if (auto b = strip(name, ".act_range_low"); !b.empty()) s_->loaded[b].range_low = v;
    else if (auto b2 = strip(name, ".act_range"); !b2.empty()) s_->loaded[b2].range = v;
    else if (auto b3 = strip(name, ".temporal_err"); !b3.empty()) s_->loaded[b3].temporal_err = v.item<double>();
    else if (auto b4 = strip(name, ".correct_a"); !b4.empty()) s_->loaded[b4].correct_a = v;
    else if (auto b5 = strip(name, ".correct_b"); !b5.empty()) s_->loaded[b5].correct_b = v;
  }
  s_->meta = f.metadata;
  s_->have_file = true;
  s_->prepared = false;
}

void PtqOps::prepare(const std::vector<LinearRef>& linears) {
  // Weights are quantized once, not per batch: again only when the table, the weights or the
  // calibration changed (or a correction run is under way, which must not apply one).
  bool same = s_->prepared && !correcting_ && s_->prepared_for == &linears && s_->weight_ptrs.size() == linears.size();
  for (size_t i = 0; same && i < linears.size(); ++i) same = s_->weight_ptrs[i] == linears[i].weight.data_ptr();
  if (same) {
    return;
  }
  c10::NoGradGuard no_grad;
  s_->layers.assign(linears.size(), State::Layer());
  s_->prepared_for = &linears;
  s_->weight_ptrs.clear();
  for (auto& l : linears) s_->weight_ptrs.push_back(l.weight.data_ptr());
  s_->prepared = !correcting_;
  if (ctx_ && s_->have_file) {
    const int T = std::stoi(s_->meta.count("steps") ? s_->meta["steps"] : "0");
    CL_CHECK(o_.timestep_groups == 1 || T == ctx_->steps,
             "ptq: `" << path_ << "` was calibrated on a " << T << "-step trajectory, this run has " << ctx_->steps
                      << " steps (timestep_groups: " << o_.timestep_groups << " maps steps to ranges); recalibrate");
  }
  const QuantSpec wspec{o_.weight_bits, o_.weight_symmetric, o_.weight_calibrator, o_.percentile};
  for (size_t i = 0; i < linears.size(); ++i) {
    const LinearRef& l = linears[i];
    State::Layer& q = s_->layers[i];
    q.temporal = temporal_[i];
    if (!linear_matches(l, o_.layers)) continue;
    const State::Loaded* ld = nullptr;
    if (s_->have_file) {
      auto it = s_->loaded.find(l.name);
      if (it != s_->loaded.end()) ld = &it->second;
    }
    if (q.temporal && o_.temporal == "exact") continue;
    if (q.temporal && o_.temporal == "auto") {
      CL_CHECK(ld && std::isfinite(ld->temporal_err),
               "ptq: `" << path_ << "` has no temporal error for `" << l.name << "`; re-run `cachelab calibrate`");
      if (ld->temporal_err > o_.temporal_tolerance) continue;
    }
    q.quant = true;
    if (o_.act_bits < 16 && o_.act_granularity == "tensor") {
      CL_CHECK(ld && ld->range.defined(), "ptq: `" << path_ << "` has no activation range for linear `" << l.name
                                                   << "` (another backbone, or the layer was never called); re-run "
                                                      "`cachelab calibrate EXP.yaml`");
      CL_CHECK(ld->range.dim() == 2 && ld->range.size(0) == o_.timestep_groups && ld->range.size(1) == 2,
               "ptq: `" << path_ << "`: " << l.name << ".act_range must be [" << o_.timestep_groups << ", 2]");
      // Read once here: the hot path quantizes with plain floats.
      auto pairs = [](const at::Tensor& t) {
        std::vector<std::pair<float, float>> v;
        for (int64_t g = 0; g < t.size(0); ++g) v.emplace_back(t[g][0].item<float>(), t[g][1].item<float>());
        return v;
      };
      q.range = pairs(ld->range);
      q.range_low = ld->range_low.defined() ? pairs(ld->range_low) : q.range;
    }
    q.w_hi = fake_quantize_weight(l.weight, wspec, o_.weight_granularity, o_.group_size).to(l.weight.dtype());
    if (o_.low_bits > 0) {
      QuantSpec lo = wspec;
      lo.bits = o_.low_bits;
      q.w_lo = fake_quantize_weight(l.weight, lo, o_.weight_granularity, o_.group_size).to(l.weight.dtype());
    }
    q.bias = l.bias;
    if (o_.correct && !correcting_) {
      CL_CHECK(ld && ld->correct_a.defined() && ld->correct_b.defined() && ld->correct_a.numel() == l.weight.size(0),
               "ptq: `" << path_ << "` has no correction for `" << l.name
                        << "`; run `cachelab calibrate EXP.yaml` with correct: true");
      q.correct_a = ld->correct_a.to(l.weight.dtype());
      q.correct_b = ld->correct_b.to(l.weight.dtype());
    }
  }
}

void PtqOps::begin_step(const StepIndex& step) {
  const int T = std::max(step.count, 1);
  s_->group = std::min(o_.timestep_groups - 1, int(int64_t(step.index) * o_.timestep_groups / T));
  s_->step = step.index;
  s_->record = true;
  if (observing_ && o_.calibration_steps > 0 && o_.calibration_steps < T) {
    // Steps round(k (T-1) / (n-1)), k = 0..n-1: spread evenly, first and last included.
    const int n = o_.calibration_steps;
    s_->record = false;
    for (int k = 0; k < n && !s_->record; ++k)
      s_->record = (n == 1 ? 0 : int(std::lround(double(k) * (T - 1) / (n - 1)))) == step.index;
  }
  for (auto& q : s_->layers) q.error = OutputError(), q.bits_used = 0;
  Ops::begin_step(step);
}

void PtqOps::end_step() {
  if (ctx_ && ctx_->linear_extra && !observing_)
    for (size_t i = 0; i < s_->layers.size(); ++i) {
      const auto& q = s_->layers[i];
      if (!q.quant || q.error.calls == 0) continue;
      if (err_extra_ >= 0) ctx_->set_linear_extra(err_extra_, int(i), q.error.rel());
      if (bits_extra_ >= 0) ctx_->set_linear_extra(bits_extra_, int(i), q.bits_used);
    }
  Ops::end_step();
}

at::Tensor PtqOps::quantized(int id, const at::Tensor& x, int bits) {
  State::Layer& q = s_->layers[size_t(id)];
  const bool low = o_.low_bits > 0 && bits == o_.low_bits;
  const int abits = low ? std::min(o_.act_bits, o_.low_bits) : o_.act_bits;
  at::Tensor xq = x;
  if (o_.act_bits < 16) {
    if (o_.act_granularity == "token") {
      xq = fake_quantize_per_token(x, QuantSpec{abits, o_.act_symmetric, "minmax", 100.0});
    } else {
      const auto& r = (low ? q.range_low : q.range)[size_t(s_->group)];
      xq = fake_quantize_range(x, r.first, r.second, abits, o_.act_symmetric);
    }
  }
  return dense_linear(xq, low ? q.w_lo : q.w_hi, q.bias);
}

at::Tensor PtqOps::linear(int id, const at::Tensor& x) {
  const size_t i = size_t(id);
  if (observing_) {
    if (s_->record) {
      auto rows = x.detach().reshape({x.dim() > 1 ? x.size(0) : 1, -1}).to(at::kFloat);
      const int64_t B = rows.size(0), C = rows.size(1);
      auto mm = at::aminmax(rows, 1);
      auto mn = std::get<0>(mm).contiguous(), mx = std::get<1>(mm).contiguous();
      const int64_t per = std::max<int64_t>(16, o_.calibration_values / B);
      // A stride sharing a factor with the channel count would keep sampling the same few
      // channels (a stride of exactly K sees one channel); a coprime one visits them all.
      const int64_t K = x.size(-1);
      int64_t stride = std::max<int64_t>(1, C / per);
      while (stride > 1 && std::gcd(stride, K) != 1) ++stride;
      auto vals = rows.slice(1, 0, C, stride).clone();
      for (int64_t b = 0; b < B; ++b)
        s_->obs[i].push_back({s_->step, s_->group, (int64_t(s_->batch) << 20) + b, mn.data_ptr<float>()[b],
                              mx.data_ptr<float>()[b], vals[b]});
      if (temporal_[i])
        s_->temporal_in[i].emplace_back(s_->group, x.detach().to(at::kFloat).clone());
      ++s_->calls;
    }
    return Ops::linear(id, x);
  }
  State::Layer& q = s_->layers[i];
  if (!q.quant) return Ops::linear(id, x);
  int bits = o_.weight_bits;
  const int block = (*linears_)[i].block;
  if (o_.low_bits > 0 && ctx_ && block >= 0 && size_t(block) < ctx_->block_bits.size() &&
      ctx_->block_bits[size_t(block)] > 0)
    bits = ctx_->block_bits[size_t(block)] <= o_.low_bits ? o_.low_bits : o_.weight_bits;
  auto y = quantized(id, x, bits);
  if (correcting_) {
    const LinearRef& l = (*linears_)[i];
    const int64_t out = y.size(-1);
    q.correction.add(y.reshape({-1, out}), dense_linear(x, l.weight, l.bias).reshape({-1, out}));
    return y;
  }
  if (q.correct_a.defined() && bits == o_.weight_bits) y = y * q.correct_a + q.correct_b;
  q.bits_used = bits;
  if (ctx_ && ctx_->linear_extra) {
    const LinearRef& l = (*linears_)[i];
    q.error.add(y.narrow(0, 0, 1), dense_linear(x.narrow(0, 0, 1), l.weight, l.bias));
  }
  return y;
}

void PtqOps::start_calibration() {
  observing_ = true;
  s_->batch = -1;
  correcting_ = false;
  s_->obs.clear();
  s_->temporal_in.clear();
  s_->calls = 0;
}

bool PtqOps::another_run(double, const at::Tensor&) {
  if (!o_.correct || !observing_) return false;
  fit_ranges();  // the second run quantizes with them and fits the correction
  observing_ = false;
  correcting_ = true;
  return true;
}

std::string PtqOps::finish_calibration() {
  CL_CHECK(observing_ || correcting_, "ptq: finish_calibration without start_calibration");
  if (observing_) fit_ranges();
  auto& tensors = s_->tensors;
  int corrected = 0;
  double mean_a = 0;
  if (correcting_) {
    const auto& linears = *linears_;
    for (size_t i = 0; i < s_->layers.size(); ++i) {
      State::Layer& q = s_->layers[i];
      if (q.correction.n == 0) continue;
      auto ab = q.correction.fit();
      tensors.emplace_back(linears[i].name + ".correct_a", ab.first.to(at::kFloat));
      tensors.emplace_back(linears[i].name + ".correct_b", ab.second.to(at::kFloat));
      mean_a += ab.first.mean().item<double>();
      ++corrected;
      q.correction = AffineSums();
    }
    CL_CHECK(corrected > 0, "ptq: the correction run quantized no linear; nothing to fit");
    s_->meta["correct"] = "true";
    s_->have_file = false;  // reload with the correction on the next run
    s_->prepared = false;
  }
  std::error_code ec;
  fs::create_directories(fs::path(path_).parent_path(), ec);
  write_safetensors(path_, tensors, s_->meta);
  observing_ = correcting_ = false;
  std::string summary = s_->summary;
  if (corrected > 0) summary += "; correction of " + std::to_string(corrected) + " linears (mean a " + num(mean_a / corrected) + ")";
  s_->tensors.clear();
  return summary + " -> " + path_;
}

void PtqOps::fit_ranges() {
  CL_CHECK(linears_ && s_->calls > 0, "ptq: the calibration saw no forward pass; run a trajectory between start and finish");
  c10::NoGradGuard no_grad;
  const auto& linears = *linears_;
  const int G = o_.timestep_groups;
  // TAP (Q&C): per timestep group, the (step, sample) pairs that calibrate.
  std::vector<std::set<std::pair<int, int64_t>>> chosen{size_t(G)};
  std::ostringstream tap;
  if (o_.calibration_select == "tap") {
    for (int g = 0; g < G; ++g) {
      std::map<std::pair<int, int64_t>, int> keys;  // (step, sample) -> row
      for (auto& per : s_->obs)
        for (auto& ob : per)
          if (ob.group == g) keys.emplace(std::make_pair(ob.step, ob.sample), 0);
      if (keys.empty()) continue;
      std::vector<std::pair<int, int64_t>> rows;
      for (auto& [k, r] : keys) r = int(rows.size()), rows.push_back(k);
      // Features: every linear's input min and max for the pair, standardised, and the step.
      const int64_t L = int64_t(linears.size());
      auto X = at::full({int64_t(rows.size()), 2 * L + 1}, std::nan(""), at::kDouble);
      auto acc = X.accessor<double, 2>();
      for (int64_t l = 0; l < L; ++l)
        for (auto& ob : s_->obs[size_t(l)])
          if (ob.group == g) {
            const int r = keys[{ob.step, ob.sample}];
            acc[r][2 * l] = ob.mn;
            acc[r][2 * l + 1] = ob.mx;
          }
      for (size_t r = 0; r < rows.size(); ++r) acc[int64_t(r)][2 * L] = rows[r].first;
      auto seen = ~at::isnan(X);
      auto cnt = seen.sum(0).clamp_min(1).to(at::kDouble);
      auto mean = at::where(seen, X, at::zeros_like(X)).sum(0) / cnt;
      X = at::where(seen, X, mean.unsqueeze(0).expand_as(X));
      auto sd = X.std(0, /*unbiased=*/false);
      X = (X - mean) / sd.masked_fill(sd <= 1e-12, 1.0);
      X.select(1, 2 * L).mul_(std::sqrt(double(2 * L)));  // the step weighs as much as all the ranges
      for (int64_t r : kmeans_medoids(X, o_.tap_clusters)) chosen[size_t(g)].insert(rows[size_t(r)]);
      tap << (g ? ", " : "") << chosen[size_t(g)].size() << " of " << rows.size();
    }
  }
  auto use = [&](const State::Obs& ob) {
    return o_.calibration_select != "tap" || chosen[size_t(ob.group)].count({ob.step, ob.sample}) > 0;
  };
  // The range of a set of observations for `bits`.
  auto fit = [&](const std::vector<const State::Obs*>& obs, int bits) {
    std::vector<at::Tensor> parts;
    double mn = std::numeric_limits<double>::infinity(), mx = -mn;
    for (auto* ob : obs) {
      mn = std::min<double>(mn, ob->mn);
      mx = std::max<double>(mx, ob->mx);
      parts.push_back(ob->values);
    }
    if (o_.act_calibrator == "minmax") return std::make_pair(float(mn), float(mx));
    parts.push_back(at::tensor({float(mn), float(mx)}));  // the extremes always take part
    auto r = calibrate_rows(at::cat(parts).view({1, -1}),
                            QuantSpec{bits, o_.act_symmetric, o_.act_calibrator, o_.percentile});
    return std::make_pair(r.first.item<float>(), r.second.item<float>());
  };
  auto ranges = [&](size_t i, int bits) {
    std::vector<const State::Obs*> all;
    std::vector<std::vector<const State::Obs*>> by_group{size_t(G)};
    for (auto& ob : s_->obs[i])
      if (use(ob)) all.push_back(&ob), by_group[size_t(ob.group)].push_back(&ob);
    if (all.empty())  // TAP chose no pair this linear was called in: every pair
      for (auto& ob : s_->obs[i]) all.push_back(&ob), by_group[size_t(ob.group)].push_back(&ob);
    const auto global = fit(all, bits);
    auto t = at::empty({G, 2}, at::kFloat);
    for (int g = 0; g < G; ++g) {
      // A group no calibration step fell in (calibration_steps < timestep_groups) takes the global range.
      const auto r = by_group[size_t(g)].empty() ? global : fit(by_group[size_t(g)], bits);
      t[g][0] = r.first;
      t[g][1] = r.second;
    }
    return t;
  };
  auto& tensors = s_->tensors;
  tensors.clear();
  s_->loaded.clear();
  int fitted = 0;
  std::ostringstream temporal;
  for (size_t i = 0; i < linears.size(); ++i) {
    if (s_->obs[i].empty()) continue;
    ++fitted;
    State::Loaded& ld = s_->loaded[linears[i].name];
    ld.range = ranges(i, o_.act_bits < 16 ? o_.act_bits : 8);
    tensors.emplace_back(linears[i].name + ".act_range", ld.range);
    if (o_.low_bits > 0) {
      ld.range_low = ranges(i, std::min(o_.act_bits, o_.low_bits));
      tensors.emplace_back(linears[i].name + ".act_range_low", ld.range_low);
    }
    if (s_->temporal_in[i].empty()) continue;
    // The temporal linear's output error, quantized as this variant would, over every call.
    const LinearRef& l = linears[i];
    auto w = fake_quantize_weight(l.weight.to(at::kFloat),
                                  QuantSpec{o_.weight_bits, o_.weight_symmetric, o_.weight_calibrator, o_.percentile},
                                  o_.weight_granularity, o_.group_size);
    auto b = l.bias.defined() ? l.bias.to(at::kFloat) : at::Tensor();
    double e2 = 0, r2 = 0;
    for (auto& [g, x] : s_->temporal_in[i]) {
      at::Tensor xq = x;
      if (o_.act_bits < 16)
        xq = o_.act_granularity == "token"
                 ? fake_quantize_per_token(x, QuantSpec{o_.act_bits, o_.act_symmetric, "minmax", 100.0})
                 : fake_quantize_range(x, ld.range[g][0].item<float>(), ld.range[g][1].item<float>(), o_.act_bits,
                                       o_.act_symmetric);
      auto ref = dense_linear(x, l.weight.to(at::kFloat), b).to(at::kDouble);
      e2 += (dense_linear(xq, w, b).to(at::kDouble) - ref).pow(2).sum().item<double>();
      r2 += ref.pow(2).sum().item<double>();
    }
    ld.temporal_err = r2 > 0 ? std::sqrt(e2 / r2) : 0.0;
    tensors.emplace_back(l.name + ".temporal_err", at::tensor({float(ld.temporal_err)}, at::kFloat));
    temporal << (temporal.tellp() > 0 ? ", " : "") << l.name << " " << ld.temporal_err
             << (ld.temporal_err > o_.temporal_tolerance ? " (exact under auto)" : "");
  }
  s_->meta = {{"format", kFormat},
              {"backbone_digest", s_->run_digest},
              {"steps", std::to_string(s_->run_steps)},
              {"act_bits", std::to_string(o_.act_bits)},
              {"act_symmetric", o_.act_symmetric ? "true" : "false"},
              {"act_calibrator", o_.act_calibrator},
              {"percentile", num(o_.percentile)},
              {"timestep_groups", std::to_string(o_.timestep_groups)},
              {"low_bits", std::to_string(o_.low_bits)},
              {"calibration_steps", std::to_string(o_.calibration_steps)},
              {"calibration_select", o_.calibration_select},
              {"tap_clusters", std::to_string(o_.tap_clusters)},
              {"temporal_weights", temporal_weights()}};
  s_->have_file = true;
  s_->prepared = false;
  s_->obs.clear();
  s_->temporal_in.clear();
  std::ostringstream os;
  os << "ptq: activation ranges of " << fitted << " linears x " << G << " timestep group(s) (" << o_.act_calibrator
     << ", " << s_->calls << " calls)";
  if (tap.tellp() > 0) os << "; TAP kept " << tap.str() << " (step, sample) pairs per timestep group";
  if (temporal.tellp() > 0) os << "; temporal errors: " << temporal.str();
  s_->summary = os.str();
}

}  // namespace cachelab
