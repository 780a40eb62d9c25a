#include "caches/threshold_search.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "caches/calibration.h"
#include "framework/error.h"
#include "framework/registries.h"
#include "metrics/functional.h"

namespace cachelab {

ThresholdSearch::ThresholdSearch(const ThresholdSearchOptions& o, const BuildContext& ctx) : o_(o), ctx_(ctx) {
  if (ctx.run) run_ = *ctx.run, ctx_.run = &run_;
  use(o_.lo);  // builds the inner policy once, so a bad inner config or key fails at validation
}
ThresholdSearch::~ThresholdSearch() = default;

void ThresholdSearch::use(double threshold) {
  ConfigNode node = o_.inner.node;
  std::ostringstream v;
  v.precision(12);
  v << threshold;
  const std::string path = node.path.empty() ? o_.key : node.path + "." + o_.key;
  node.child(o_.key) = ConfigNode::make_scalar(v.str(), path);
  inner_ = caches().build(node, nullptr, ctx_);
  threshold_ = threshold;
}

void ThresholdSearch::begin_run(RunContext& ctx) {
  if (digest_.empty()) digest_ = backbone_digest(ctx);
  if (held_) {  // the inner policy is being fitted: it runs as it is, this search reads nothing
    inner_->begin_run(ctx);
    return;
  }
  if (!calibrating_ && !loaded_) {
    bool found = false;
    for (auto& line : read_calibration_file(o_.file, digest_, "threshold_search")) {
      std::istringstream in(line);
      std::string tag, key;
      in >> tag;
      if (tag == "key:") {
        in >> key;
        CL_CHECK(key == o_.key, "threshold_search: `" << o_.file << "` holds a search of `" << key << "`, not `"
                                                      << o_.key << "`; re-run `cachelab calibrate`");
      } else if (tag == "value:") {
        double t = 0;
        CL_CHECK(in >> t, "threshold_search: `" << o_.file << "` has a malformed `value:` line");
        use(t);
        found = true;
      }
    }
    CL_CHECK(found, "threshold_search: `" << o_.file << "` holds no `value:` line; re-run `cachelab calibrate`");
    loaded_ = true;
  }
  if (!reference_phase_) inner_->begin_run(ctx);
}

void ThresholdSearch::begin_step(const StepIndex& step) {
  if (!reference_phase_) inner_->begin_step(step);
}

Tensors ThresholdSearch::at(SiteCall& call, const Next& next) {
  if (reference_phase_ && !held_) return next(call);
  return inner_->at(call, next);
}

void ThresholdSearch::start_calibration() {
  calibrating_ = true;
  reference_phase_ = true;  // the first run computes everything: the curve's reference
  curve_.clear();
  runs_ = 0;
}

ThresholdSearch::Point ThresholdSearch::choose(const std::vector<Point>& curve, const std::string& target,
                                               double value, bool* reached) {
  CL_CHECK(!curve.empty(), "threshold_search: no point on the curve");
  const bool speed = target == "flops_speedup";
  auto ok = [&](const Point& p) { return speed ? p.speedup >= value : p.psnr >= value; };
  const Point* best = nullptr;
  for (auto& p : curve)
    if (ok(p) && (!best || (speed ? p.psnr > best->psnr : p.speedup > best->speedup))) best = &p;
  if (reached) *reached = best != nullptr;
  if (best) return *best;
  // None reaches the target: the closest on the target's axis.
  for (auto& p : curve)
    if (!best || (speed ? p.speedup > best->speedup : p.psnr > best->psnr)) best = &p;
  return *best;
}

bool ThresholdSearch::another_run(double flops, const at::Tensor& samples) {
  const bool speed = o_.target == "flops_speedup";
  if (reference_phase_) {
    ref_flops_ = flops, ref_samples_ = samples;
    reference_phase_ = false;
  } else {
    curve_.push_back({threshold_, flops > 0 ? ref_flops_ / flops : 0.0, psnr(samples, ref_samples_)});
  }
  ++runs_;
  if (int(curve_.size()) < o_.grid) {
    use(o_.lo + (o_.hi - o_.lo) * double(curve_.size()) / double(o_.grid - 1));
    return true;
  }
  if (int(curve_.size()) >= o_.grid + o_.refine) return false;
  // Bisect between neighbouring thresholds whose points fall on both sides of the target.
  std::vector<Point> sorted = curve_;
  std::sort(sorted.begin(), sorted.end(), [](const Point& a, const Point& b) { return a.threshold < b.threshold; });
  auto ok = [&](const Point& p) { return speed ? p.speedup >= o_.value : p.psnr >= o_.value; };
  for (size_t i = 0; i + 1 < sorted.size(); ++i)
    if (ok(sorted[i]) != ok(sorted[i + 1])) {
      use(0.5 * (sorted[i].threshold + sorted[i + 1].threshold));
      return true;
    }
  return false;  // the target is not crossed anywhere on the curve: nothing to refine
}

std::string ThresholdSearch::finish_calibration() {
  CL_CHECK(!curve_.empty(), "threshold_search: the calibration made no run of the inner policy");
  calibrating_ = false;
  bool reached = false;
  const Point best = choose(curve_, o_.target, o_.value, &reached);
  std::vector<Point> sorted = curve_;
  std::sort(sorted.begin(), sorted.end(), [](const Point& a, const Point& b) { return a.threshold < b.threshold; });
  std::ostringstream payload, msg;
  payload.precision(9);
  payload << "key: " << o_.key << "\n"
          << "target: " << o_.target << " " << o_.value << (reached ? " reached" : " not_reached") << "\n"
          << "value: " << best.threshold << "\n";
  for (auto& p : sorted) payload << "curve: " << p.threshold << " " << p.speedup << " " << p.psnr << "\n";
  const std::string type = o_.inner.node.find("type") ? o_.inner.node.find("type")->scalar : "?";
  const std::string path = write_calibration_file(
      o_.file, "threshold_search of `" + type + "." + o_.key + "`; curve: threshold flops_speedup psnr_db", digest_,
      payload.str());
  use(best.threshold);
  loaded_ = true;
  msg.precision(4);
  msg << "threshold_search: " << type << "." << o_.key << " = " << best.threshold << " (speedup " << best.speedup
      << "x, PSNR " << best.psnr << " dB; target " << o_.target << " " << o_.value
      << (reached ? "" : ", NOT reached") << ") from " << curve_.size() << " runs; curve:";
  for (auto& p : sorted) msg << " [" << p.threshold << ": " << p.speedup << "x " << p.psnr << "dB]";
  msg << " -> " << path;
  return msg.str();
}

}  // namespace cachelab
