// Runs a pipeline's batch without the runner: dense ops over the backbone's linears, no
// layers, noise from one seeded CPU generator, float32 on the CPU. A trainer that decodes with
// its model (Learn2PD's filter) and the tests use it; it keeps every step begun and the
// sample after each.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "framework/backbone.h"
#include "framework/pipeline.h"
#include "framework/site.h"

namespace cachelab {

class DirectDriver final : public StepDriver {
 public:
  DirectDriver(const Backbone& backbone, uint64_t seed);  // (keeps a reference to its linear table)
  Hooks& hooks() override { return hooks_; }
  void begin_step(const StepIndex& s) override { steps.push_back(s); }
  bool end_step(const at::Tensor& x_after) override;
  at::Tensor randn(at::IntArrayRef shape) override;
  at::TensorOptions options() const override;

  std::vector<StepIndex> steps;  // every step begun
  std::vector<at::Tensor> after;  // the sample after each step (a copy)

 private:
  PassThroughHooks hooks_;
  at::Generator gen_;
};

}  // namespace cachelab
