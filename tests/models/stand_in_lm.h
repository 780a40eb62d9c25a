// A stand-in masked-diffusion LM for decoding tests: the Backbone and MaskedLm plumbing of a
// model without weights, sites or linears (vocabulary V, MASK = V, sequences up to L), whose
// logits a test writes; it counts its forwards.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "framework/backbone.h"
#include "models/masked_lm.h"

namespace cachelab::testing {

class StandInMaskedLm : public Backbone, public MaskedLm {
 public:
  StandInMaskedLm(int64_t length, int64_t vocab) : L_(length), V_(vocab) {}
  // The logits [B, block_end - context, V] of positions [cond.context, cond.block_end).
  virtual at::Tensor logits(const at::Tensor& x, const Cond& cond) = 0;
  at::Tensor forward(const at::Tensor& x, const at::Tensor&, const Cond& cond, Hooks&) override {
    ++forwards;
    return logits(x, cond);
  }
  const std::vector<Site>& sites() const override { return sites_; }
  const std::vector<LinearRef>& linears() const override { return linears_; }
  std::vector<int64_t> sample_shape() const override { return {L_}; }
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() override { return {}; }
  std::vector<at::Tensor> trainable_parameters() override { return {}; }
  void load(const std::string&) override {}
  void save(const std::string&, const std::vector<std::pair<std::string, std::string>>&) override {}
  int64_t num_parameters() override { return 0; }
  void to(at::Device, at::ScalarType) override {}
  int64_t vocab_size() const override { return V_; }
  int64_t mask_id() const override { return V_; }
  int64_t max_length() const override { return L_; }
  int forwards = 0;

 protected:
  int64_t L_, V_;

 private:
  std::vector<Site> sites_;
  std::vector<LinearRef> linears_;
};

}  // namespace cachelab::testing
