// tiny_mdlm and tiny_video without caches: shapes, checkpoint names, site tags, and the
// attention pattern each defines (bidirectional over tokens; block-causal over frames).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <boost/test/unit_test.hpp>
#include <set>

#include "models/tiny_mdlm.h"
#include "models/tiny_video.h"
#include "tests/test_util.h"

using namespace cachelab;

namespace {

TinyMdlmOptions mdlm_options() {
  TinyMdlmOptions o;
  o.hidden_size = 32;
  o.max_length = 24;
  return o;
}

Cond context(int64_t c) {
  Cond cond;
  cond.context = c;
  return cond;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tiny_mdlm)

BOOST_AUTO_TEST_CASE(names_sites_and_output_shape) {
  c10::InferenceMode g;
  TinyMdlm m(mdlm_options());
  std::set<std::string> names;
  for (auto& [n, t] : m.named_tensors()) names.insert(n);
  for (const char* n : {"tok_embed.weight", "pos_embed", "layers.1.attn.qkv.weight", "layers.1.attn.proj.bias",
                        "layers.0.mlp.fc1.weight", "layers.0.norm2.weight", "norm_f.bias", "head.weight"})
    BOOST_CHECK_MESSAGE(names.count(n), "missing " << n);
  BOOST_CHECK_EQUAL(m.linears()[size_t(0)].name, "layers.0.attn.qkv");
  const auto& s = m.sites();
  BOOST_REQUIRE_EQUAL(s.size(), size_t(2 + 3 * 2));
  BOOST_CHECK(s[3].kind == SiteKind::Attn && s[3].name == "layers.0.attn" && s[3].block == 0);
  BOOST_CHECK(s[7].kind == SiteKind::Mlp && s[7].name == "layers.1.mlp" && s[7].rows);
  BOOST_CHECK_EQUAL(m.mask_id(), 32);
  PassThroughHooks h(m.linears());
  auto x = at::randint(0, 33, {2, 20}, at::kLong);
  auto full = m.forward(x, at::zeros({2}), context(0), h);
  BOOST_CHECK(full.sizes() == at::IntArrayRef({2, 20, 32}));
  // With a context, the logits cover the positions after it, and are those of the full pass.
  auto tail = m.forward(x, at::zeros({2}), context(12), h);
  BOOST_REQUIRE(tail.sizes() == at::IntArrayRef({2, 8, 32}));
  BOOST_CHECK_LE((tail - full.narrow(1, 12, 8)).abs().max().item<double>(), 1e-5);
  cachelab::testing::check_error([&] { m.forward(at::zeros({1, 25}, at::kLong), at::zeros({1}), context(0), h); },
                                 {"exceeds max_length"});
}

BOOST_AUTO_TEST_CASE(attention_is_bidirectional) {
  c10::InferenceMode g;
  TinyMdlm m(mdlm_options());
  PassThroughHooks h(m.linears());
  auto x = at::randint(0, 32, {1, 16}, at::kLong);
  auto y = x.clone();
  y[0][15] = (y[0][15].item<int64_t>() + 1) % 32;  // a change at the last position ...
  auto a = m.forward(x, at::zeros({1}), context(0), h), b = m.forward(y, at::zeros({1}), context(0), h);
  BOOST_CHECK_GT((a.narrow(1, 0, 1) - b.narrow(1, 0, 1)).abs().max().item<double>(), 1e-4);  // ... reaches the first
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tiny_video)

BOOST_AUTO_TEST_CASE(names_sites_and_output_shape) {
  c10::InferenceMode g;
  TinyVideoOptions o;
  TinyVideo m(o);
  std::set<std::string> names;
  for (auto& [n, t] : m.named_tensors()) names.insert(n);
  for (const char* n : {"patch_embed.weight", "pos_embed", "frame_embed", "t_embedder.mlp.0.weight",
                        "t_embedder.mlp.2.bias", "layers.1.attn.qkv.weight", "layers.1.mlp.fc2.weight", "head.bias"})
    BOOST_CHECK_MESSAGE(names.count(n), "missing " << n);
  BOOST_CHECK_EQUAL(m.tokens_per_frame(), 16);
  BOOST_CHECK(m.sample_shape() == std::vector<int64_t>({16, 1, 8, 8}));
  const auto& s = m.sites();
  BOOST_REQUIRE_EQUAL(s.size(), size_t(2 + 3 * o.depth));
  BOOST_CHECK(s[0].kind == SiteKind::Model && s[1].kind == SiteKind::Body && s[2].kind == SiteKind::Block);
  BOOST_CHECK(s[6].kind == SiteKind::Attn && s[6].name == "layers.1.attn" && s[6].block == 1);
  PassThroughHooks h(m.linears());
  auto out = m.forward(at::randn({2, 5, 1, 8, 8}), at::full({2}, 500.0), context(3), h);
  BOOST_CHECK(out.sizes() == at::IntArrayRef({2, 2, 1, 8, 8}));
  BOOST_CHECK(at::isfinite(out).all().item<bool>());
}

BOOST_AUTO_TEST_CASE(attention_is_block_causal_across_frames) {
  c10::InferenceMode g;
  TinyVideo m(TinyVideoOptions{});
  PassThroughHooks h(m.linears());
  auto x = at::randn({1, 4, 1, 8, 8});
  auto later = x.clone();
  later.select(1, 3).add_(1.0);  // change the last frame
  auto earlier = x.clone();
  earlier.select(1, 0).add_(1.0);  // change the first frame
  const auto t = at::full({1}, 300.0);
  auto a = m.forward(x, t, context(0), h), b = m.forward(later, t, context(0), h),
       c = m.forward(earlier, t, context(0), h);
  // Frames 0..2 never see frame 3: bitwise unchanged. Frame 3 sees frame 0.
  BOOST_CHECK(at::equal(a.narrow(1, 0, 3), b.narrow(1, 0, 3)));
  BOOST_CHECK_GT((a.select(1, 3) - c.select(1, 3)).abs().max().item<double>(), 1e-4);
  // Within a frame every patch sees every other: frame 3's output changed everywhere it could.
  BOOST_CHECK_GT((a.select(1, 3) - b.select(1, 3)).abs().max().item<double>(), 1e-4);
}

TinyVideoOptions chunked_options(const std::string& position) {
  TinyVideoOptions o;
  o.chunk_frames = 2;
  o.frame_position = position;
  o.max_frames = 8;
  return o;
}

BOOST_AUTO_TEST_CASE(chunks_are_bidirectional_inside_and_causal_across) {
  c10::InferenceMode g;
  for (const char* position : {"table", "rope", "rope3d"}) {
    TinyVideo m(chunked_options(position));
    PassThroughHooks h(m.linears());
    auto x = at::randn({1, 6, 1, 8, 8});
    auto second = x.clone();
    second.select(1, 3).add_(1.0);  // the second frame of chunk 1
    const auto t = at::full({1}, 300.0);
    auto a = m.forward(x, t, context(0), h), b = m.forward(second, t, context(0), h);
    BOOST_CHECK(at::equal(a.narrow(1, 0, 2), b.narrow(1, 0, 2)));  // chunk 0 never sees chunk 1
    BOOST_CHECK_GT((a.select(1, 2) - b.select(1, 2)).abs().max().item<double>(), 1e-4);  // its first frame does
    BOOST_CHECK_GT((a.select(1, 4) - b.select(1, 4)).abs().max().item<double>(), 1e-4);  // as does chunk 2
  }
}

// Teacher forcing runs every noisy chunk in one pass beside a clean copy; each chunk's
// prediction must be what the pipeline's forward gives it with the clean frames before it.
BOOST_AUTO_TEST_CASE(teacher_forcing_equals_the_inference_forward) {
  c10::InferenceMode g;
  for (const char* position : {"table", "rope", "rope3d"}) {
    TinyVideo m(chunked_options(position));
    PassThroughHooks h(m.linears());
    auto clean = at::randn({2, 8, 1, 8, 8}), noisy = at::randn({2, 8, 1, 8, 8});
    auto t = at::tensor({100.f, 400.f, 700.f, 900.f, 50.f, 500.f, 999.f, 0.f}).reshape({2, 4});
    for (int64_t ctx : {0, 2}) {
      auto tf = m.teacher_forcing(clean, noisy, t, ctx);
      BOOST_REQUIRE(tf.sizes() == at::IntArrayRef({2, 8 - ctx, 1, 8, 8}));
      for (int64_t u = ctx / 2; u < 4; ++u) {
        auto x = at::cat({clean.narrow(1, 0, 2 * u), noisy.narrow(1, 2 * u, 2)}, 1);
        auto ref = m.forward(x, t.select(1, u).contiguous(), context(2 * u), h);
        const double err = (tf.narrow(1, 2 * u - ctx, 2) - ref).abs().max().item<double>();
        BOOST_CHECK_MESSAGE(err < 1e-4, position << " context " << ctx << " chunk " << u << ": max |diff| " << err);
      }
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
