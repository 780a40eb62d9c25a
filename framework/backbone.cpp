#include "framework/backbone.h"

#include <ATen/ATen.h>

#include "framework/error.h"

namespace cachelab {
namespace {

at::Tensor narrow0(const at::Tensor& t, int64_t start, int64_t n) { return t.defined() ? t.narrow(0, start, n) : t; }
at::Tensor cat0(const at::Tensor& a, const at::Tensor& b) { return a.defined() ? at::cat({a, b}) : a; }

}  // namespace

Cond Cond::narrow(int64_t start, int64_t length) const {
  Cond c = *this;
  c.labels = narrow0(labels, start, length);
  c.tokens = narrow0(tokens, start, length);
  c.embeddings = narrow0(embeddings, start, length);
  return c;
}

Cond Cond::cat(const Cond& a, const Cond& b) {
  Cond c = a;
  c.labels = cat0(a.labels, b.labels);
  c.tokens = cat0(a.tokens, b.tokens);
  c.embeddings = cat0(a.embeddings, b.embeddings);
  return c;
}

const std::vector<Tap>& Backbone::taps() const {
  static const std::vector<Tap> none;
  return none;
}

at::Tensor Backbone::example_input(int64_t batch, const at::TensorOptions& options) const {
  std::vector<int64_t> shape = sample_shape();
  shape.insert(shape.begin(), batch);
  return at::zeros(shape, options);
}

Cond Backbone::null_cond(const Cond&) const { CL_FAIL("this backbone has no null condition for guidance"); }

}  // namespace cachelab
