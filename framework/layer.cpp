#include "framework/layer.h"

#include "framework/ops.h"

namespace cachelab {

int RunContext::declare(const std::string& name, const std::string& unit, const std::string& meaning,
                        bool per_linear) {
  for (size_t i = 0; i < extras_.size(); ++i)
    if (extras_[i].name == name && extras_[i].per_linear == per_linear) return int(i);
  extras_.push_back({name, unit, meaning, per_linear});
  return int(extras_.size()) - 1;
}

int RunContext::declare_site_extra(const std::string& name, const std::string& unit, const std::string& meaning) {
  return declare(name, unit, meaning, false);
}

int RunContext::declare_linear_extra(const std::string& name, const std::string& unit, const std::string& meaning) {
  return declare(name, unit, meaning, true);
}

void RunContext::set_linear_extra(int extra, int linear, double value) {
  if (linear_extra) (*linear_extra)[size_t(extra)][size_t(linear)] = value;
}

void RunContext::set_site_extra(int extra, int site, double value) {
  if (site_extra) (*site_extra)[size_t(extra)][size_t(site)] = value;
}

}  // namespace cachelab
