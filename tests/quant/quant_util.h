// Helpers of the quantizer tests: a forward outside the runner, an independent min-max
// recorder, the relative L2 error, a linear's index by name.
#pragma once
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <limits>
#include <string>
#include <vector>

#include "framework/backbone.h"
#include "framework/ops.h"
#include "framework/site.h"

namespace cachelab::testing {

// Computes every site and routes the linears through the given ops (one forward, no runner).
class OpsHooks final : public Hooks {
 public:
  explicit OpsHooks(Ops& ops) : ops_(ops) {}
  Tensors at(int, Tensors inputs, const SiteFn& compute) override {
    SiteCall call;
    call.inputs = std::move(inputs);
    SiteLog log;
    call.log = &log;
    return compute(call);
  }
  Ops& ops() override { return ops_; }

 private:
  Ops& ops_;
};

// Records every linear's input min and max, independently of w8a8.
class MinMaxOps final : public Ops {
 public:
  std::vector<double> lo, hi;
  at::Tensor linear(int id, const at::Tensor& x) override {
    if (lo.empty()) {
      lo.assign(linears_->size(), std::numeric_limits<double>::infinity());
      hi.assign(linears_->size(), -std::numeric_limits<double>::infinity());
    }
    lo[size_t(id)] = std::min(lo[size_t(id)], x.min().item<double>());
    hi[size_t(id)] = std::max(hi[size_t(id)], x.max().item<double>());
    return Ops::linear(id, x);
  }
};

inline double rel_l2(const at::Tensor& a, const at::Tensor& ref) {
  return ((a.to(at::kDouble) - ref.to(at::kDouble)).norm() / ref.to(at::kDouble).norm()).item<double>();
}

inline int linear_id(const Backbone& b, const std::string& name) {
  const auto& l = const_cast<Backbone&>(b).linears();
  for (size_t i = 0; i < l.size(); ++i)
    if (l[i].name == name) return int(i);
  BOOST_FAIL("no linear " << name);
  return -1;
}

}  // namespace cachelab::testing
