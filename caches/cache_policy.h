// A cache policy decides, at every (step, site), whether the backbone computes the
// site, or what stands in for it. It sees the site's input before deciding and the
// output after each real computation.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "framework/hooks.h"

namespace cachelab {

// Stored as uint8 in the run file (/sites/decision).
enum class Decision : uint8_t {
  Compute = 0,  // run the site
  Reuse = 1,    // a cached value stands in
  Predict = 2,  // a forecast from the site's history stands in
  Skipped = 3,  // not visited this step: an enclosing site was not computed
};
const char* decision_name(Decision d);

struct StepInfo {
  int index = 0;          // 0-based step of the sampling loop
  int count = 0;          // number of steps in the loop
  int64_t timestep = 0;   // model timestep of this step
};

class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  // Called once before a trajectory: resets all state.
  virtual void begin_run(const std::vector<Site>& sites, int steps) = 0;
  virtual void begin_step(const StepInfo& step) { (void)step; }
  // Before site `site` runs. Sets *signal to the quantity the decision was based on
  // (NaN when the policy uses none).
  virtual Decision decide(int site, const at::Tensor& input, double* signal) = 0;
  // The output that stands in when decide() returned Reuse or Predict.
  virtual at::Tensor stand_in(int site, const at::Tensor& input) = 0;
  // After site `site` was computed.
  virtual void observe(int site, const at::Tensor& input, const at::Tensor& output) {
    (void)site, (void)input, (void)output;
  }
  virtual void end_step() {}
};

constexpr double kNoSignal = std::numeric_limits<double>::quiet_NaN();

}  // namespace cachelab
