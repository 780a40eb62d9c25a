// `none`: computes every site at every step. The reference trajectory uses it.
#pragma once
#include "framework/layer.h"

namespace cachelab {

struct NoCacheOptions {
  template <class V>
  void fields(V&) {}
};

class NoCache final : public CachePolicy {
 public:
  explicit NoCache(const NoCacheOptions&) {}
  void begin_run(RunContext&) override {}
};

}  // namespace cachelab
