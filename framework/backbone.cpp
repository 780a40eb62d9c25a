#include "framework/backbone.h"

#include <ATen/ATen.h>

#include "framework/error.h"

namespace cachelab {
namespace {

at::Tensor narrow0(const at::Tensor& t, int64_t start, int64_t n) { return t.defined() ? t.narrow(0, start, n) : t; }
at::Tensor cat0(const at::Tensor& a, const at::Tensor& b) { return a.defined() ? at::cat({a, b}) : a; }
// Padding masks: an undefined one means every token of its embeddings is real.
at::Tensor cat_mask(const at::Tensor& ma, const at::Tensor& ea, const at::Tensor& mb, const at::Tensor& eb) {
  if (!ma.defined() && !mb.defined()) return ma;
  auto full = [](const at::Tensor& m, const at::Tensor& e, const at::Tensor& like) {
    return m.defined() ? m : at::ones({e.size(0), e.size(1)}, like.options());
  };
  const at::Tensor& like = ma.defined() ? ma : mb;
  return at::cat({full(ma, ea, like), full(mb, eb, like)});
}

}  // namespace

Cond Cond::narrow(int64_t start, int64_t length) const {
  Cond c = *this;
  c.labels = narrow0(labels, start, length);
  c.frames = narrow0(frames, start, length);
  c.tokens = narrow0(tokens, start, length);
  c.token_state = narrow0(token_state, start, length);
  c.confidence = narrow0(confidence, start, length);
  c.positions = narrow0(positions, start, length);
  c.soft_tokens = narrow0(soft_tokens, start, length);
  c.embeddings = narrow0(embeddings, start, length);
  c.embeddings_mask = narrow0(embeddings_mask, start, length);
  c.negative_embeddings = narrow0(negative_embeddings, start, length);
  c.negative_mask = narrow0(negative_mask, start, length);
  return c;
}

Cond Cond::cat(const Cond& a, const Cond& b) {
  Cond c = a;
  c.labels = cat0(a.labels, b.labels);
  c.frames = cat0(a.frames, b.frames);
  c.tokens = cat0(a.tokens, b.tokens);
  c.token_state = cat0(a.token_state, b.token_state);
  c.confidence = cat0(a.confidence, b.confidence);
  c.positions = cat0(a.positions, b.positions);
  c.soft_tokens = cat0(a.soft_tokens, b.soft_tokens);
  c.embeddings = cat0(a.embeddings, b.embeddings);
  c.embeddings_mask = cat_mask(a.embeddings_mask, a.embeddings, b.embeddings_mask, b.embeddings);
  c.negative_embeddings = cat0(a.negative_embeddings, b.negative_embeddings);
  c.negative_mask = a.negative_embeddings.defined()
                        ? cat_mask(a.negative_mask, a.negative_embeddings, b.negative_mask, b.negative_embeddings)
                        : at::Tensor();
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
