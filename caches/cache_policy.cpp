#include "caches/cache_policy.h"

namespace cachelab {

const char* decision_name(Decision d) {
  switch (d) {
    case Decision::Compute: return "compute";
    case Decision::Reuse: return "reuse";
    case Decision::Predict: return "predict";
    case Decision::Skipped: return "skipped";
  }
  return "?";
}

}  // namespace cachelab
