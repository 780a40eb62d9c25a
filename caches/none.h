// `none`: computes every site at every step. The reference trajectory uses it.
#pragma once
#include "caches/cache_policy.h"

namespace cachelab {

struct NoCacheOptions {
  template <class V>
  void fields(V&) {}
};

class NoCache final : public CachePolicy {
 public:
  explicit NoCache(const NoCacheOptions&) {}
  void begin_run(const std::vector<Site>&, int) override {}
  Decision decide(int, const at::Tensor&, double* signal) override {
    *signal = kNoSignal;
    return Decision::Compute;
  }
  at::Tensor stand_in(int, const at::Tensor& input) override { return input; }
};

}  // namespace cachelab
