#include "caches/calibration.h"

#include <ATen/ATen.h>

#include <cstdio>

#include "framework/ops.h"

namespace cachelab {
namespace {

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void bytes(const void* p, size_t n) {
    auto* c = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 1099511628211ull;
  }
  void str(const std::string& s) { bytes(s.data(), s.size() + 1); }
  void tensor(const at::Tensor& t) {
    if (!t.defined()) return str("<none>");
    auto c = t.detach().to(at::kCPU, at::kFloat).contiguous();
    bytes(c.data_ptr<float>(), size_t(c.numel()) * sizeof(float));
  }
};

}  // namespace

std::string backbone_digest(const RunContext& ctx) {
  Fnv f;
  if (ctx.sites)
    for (auto& s : *ctx.sites) {
      f.str(s.name);
      const int tags[3] = {int(s.kind), s.block, s.stream};
      f.bytes(tags, sizeof tags);
    }
  if (ctx.linears)
    for (auto& l : *ctx.linears) {
      f.str(l.name);
      f.tensor(l.weight);
      f.tensor(l.bias);
    }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(f.h));
  return out;
}

}  // namespace cachelab
