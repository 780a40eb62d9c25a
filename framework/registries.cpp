#include "framework/registries.h"

#include "caches/cache_policy.h"
#include "framework/hooks.h"
#include "metrics/metric.h"
#include "models/backbone.h"
#include "models/sampler.h"

namespace cachelab {

// Built on first use (function-local statics), so order of initialisation never matters.
Registry<Backbone>& backbones() {
  static Registry<Backbone> r("backbone");
  return r;
}
Registry<Sampler>& samplers() {
  static Registry<Sampler> r("sampler");
  return r;
}
Registry<CachePolicy>& caches() {
  static Registry<CachePolicy> r("cache");
  return r;
}
Registry<Metric>& metrics() {
  static Registry<Metric> r("metric");
  return r;
}

void register_all() {
  static bool done = false;
  if (done) return;
  done = true;
  register_models();
  register_caches();
  register_metrics();
}

int find_site(const std::vector<Site>& sites, const std::string& name) {
  for (size_t i = 0; i < sites.size(); ++i)
    if (sites[i].name == name) return int(i);
  return -1;
}

}  // namespace cachelab
