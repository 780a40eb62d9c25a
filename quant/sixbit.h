// `sixbit`: inference-time mixed precision (6Bit-Diffusion). A site layer that decides, per
// block and step, whether the block's linears run at `high_bits` or `low_bits`, and tells
// the quantizer through RunContext::block_bits; a `ptq` ops layer with `low_bits` set does
// the quantizing (without one the choice changes nothing).
//
// Predictor: the paper finds a block's quantization sensitivity linear in its input-output
// difference, which changes slowly across steps. At every step the layer measures each
// block's relative difference d_b = ||out - in|| / ||in||; at the next step the blocks with
// the smallest d_b (the most stable) take `low_bits`, the rest `high_bits`. At the first step
// (no difference measured yet) the deepest blocks go low first. `predictor: fixed` is the
// static baseline at the same budget: the deepest blocks low at every step.
//
// Budget: `budget_bits` is the mean weight bit width over the blocks at every step (for the
// equal-size blocks of a DiT, the parameter-weighted mean): exactly
// k = depth * (high_bits - budget_bits) / (high_bits - low_bits) blocks run low at each
// step, so k must be an integer (an error names the nearest budgets that are).
//
// Temporal Delta Cache (the paper's TDC) is the `delta_cache` policy; give it as `inner`:
//   cache: {type: sixbit, budget_bits: 6, inner: {type: delta_cache, threshold: 0.05}}
//   ops: [{type: ptq, weight_bits: 8, low_bits: 4, calibration: ...}]
//
// Logged per step on block sites: /sites/extra/inout_diff (d_b) and /sites/extra/block_bits.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "framework/layer.h"
#include "framework/registry.h"

namespace cachelab {

struct SixBitOptions {
  double budget_bits = 6;
  int high_bits = 8;
  int low_bits = 4;
  std::string predictor = "difference";
  ComponentSpec inner{"cache", {}};  // optional: the policy around which precision is chosen (TDC)
  template <class V>
  void fields(V& v) {
    v("budget_bits", budget_bits, "mean weight bits over the blocks at every step (between low_bits and high_bits)");
    v("high_bits", high_bits, "bits of the volatile blocks (the quantizer's weight_bits)");
    v("low_bits", low_bits, "bits of the stable blocks (the quantizer's low_bits)");
    v("predictor", predictor,
      "`difference`: the blocks with the smallest input-output difference at the last step go low; `fixed`: "
      "the deepest blocks go low at every step (a static allocation, the baseline)");
    v("inner", inner, "optional cache policy inside (e.g. {type: delta_cache} = the Temporal Delta Cache)");
  }
  template <class C>
  void check(C& c) const {
    c.one_of("predictor", predictor, {"difference", "fixed"});
    c.require(low_bits >= 2 && low_bits < high_bits, "low_bits", "must be at least 2 and below high_bits");
    c.require(budget_bits >= low_bits && budget_bits <= high_bits, "budget_bits",
              "must lie between low_bits and high_bits (e.g. 6 for 4 and 8)");
  }
};

class SixBitPolicy final : public NestingLayer {
 public:
  SixBitPolicy(const SixBitOptions& o, const BuildContext& ctx);
  ~SixBitPolicy() override;
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

  // The blocks that run low at a step, from the previous step's differences (NaN = unknown).
  static std::vector<bool> allocate(const std::vector<double>& diff, int low_count);

 private:
  SixBitOptions o_;
  RunContext* ctx_ = nullptr;
  std::vector<int> block_of_;
  std::vector<double> diff_;
  int depth_ = 0, low_count_ = 0, diff_extra_ = -1, bits_extra_ = -1;
};

}  // namespace cachelab
