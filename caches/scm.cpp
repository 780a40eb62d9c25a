#include "caches/scm.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "caches/magcache.h"
#include "framework/error.h"
#include "framework/registries.h"

namespace cachelab {

std::vector<int> scm_preset(const std::string& name, int steps) {
  struct P {
    double warm;
    double n0, n1;
  };
  const P p = name == "slow" ? P{0.25, 2, 2} : name == "medium" ? P{0.2, 2, 3} : name == "fast" ? P{0.15, 3, 4}
            : name == "ultra" ? P{0.1, 4, 6} : P{-1, 0, 0};
  CL_CHECK(p.warm >= 0, "scm: unknown preset `" << name << "` (slow, medium, fast, ultra)");
  std::vector<int> m(size_t(std::max(steps, 0)), 0);
  const int warm = std::max(1, int(std::ceil(p.warm * steps - 1e-9)));
  int since = 0;
  for (int s = 0; s < steps; ++s) {
    const double frac = steps - 1 > warm ? double(s - warm) / double(steps - 1 - warm) : 0.0;
    const int n = int(std::lround(p.n0 + (p.n1 - p.n0) * std::clamp(frac, 0.0, 1.0)));
    ++since;
    if (s < warm || s == steps - 1 || since >= n) m[size_t(s)] = 1, since = 0;
  }
  return m;
}

ScmPolicy::ScmPolicy(const ScmOptions& o, const BuildContext& ctx) : o_(o) {
  if (!o.inner.empty()) inner_ = caches().build(o.inner.node, nullptr, ctx);
}
ScmPolicy::~ScmPolicy() = default;

void ScmPolicy::begin_run(RunContext& ctx) {
  const int steps = ctx.inner_steps > 0 ? ctx.inner_steps : ctx.steps;
  if (!o_.mask.empty()) {
    CL_CHECK(int(o_.mask.size()) == steps, "scm: `mask` has " << o_.mask.size() << " entries but the run has " << steps
                                                              << " denoising steps");
    mask_ = o_.mask;
  } else {
    mask_ = scm_preset(o_.preset, steps);
  }
  site_ = residual_site(*ctx.sites);
  CL_CHECK(inner_ || site_ >= 0, "scm: this backbone has no site of kind body or model to cache");
  residual_ = at::Tensor();
  if (inner_) inner_->begin_run(ctx);
}

void ScmPolicy::begin_step(const StepIndex& step) {
  step_ = step.inner_count > 0 ? step.inner : step.index;
  if (step.inner_count > 0 && step.inner == 0) residual_ = at::Tensor();
  compute_ = step_ >= int(mask_.size()) || mask_[size_t(step_)] == 1;
  if (inner_) inner_->begin_step(step);
}

Tensors ScmPolicy::at(SiteCall& call, const Next& next) {
  if (inner_) {
    Tensors out = inner_->at(call, next);
    if (compute_ && call.log->computed_fraction < 1.0) {
      // A 1 step: the inner policy answered (part of) this site with a stand-in; compute it.
      call.log->decision = Decision::Compute;
      out = next(call);
    }
    return out;
  }
  if (call.site != site_) return next(call);
  const at::Tensor& in = call.inputs[0];
  call.log->signal = compute_ ? 1.0 : 0.0;  // the mask entry
  if (!compute_ && residual_.defined()) {
    call.log->decision = Decision::Reuse;
    return {in + residual_};
  }
  Tensors out = next(call);
  CL_CHECK(out[0].sizes() == in.sizes(), "scm: the " << call.info->name << " site's output shape differs from its "
                                                                            "input; no residual to reuse");
  residual_ = out[0] - in;
  return out;
}

}  // namespace cachelab
