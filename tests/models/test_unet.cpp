// U-Net: parameter names, zero-init output, the site table (nesting, tags, FLOPs counted
// by hand), branch-site shapes and a safetensors round trip.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <map>

#include "framework/safetensors.h"
#include "models/unet.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::TempDir;
using cachelab::testing::labels;
using cachelab::testing::tiny_unet_options;

namespace {

// Computes every site densely and records each call's input and output shapes.
struct ShapeHooks final : Hooks {
  explicit ShapeHooks(const std::vector<LinearRef>& l) : inner(l) {}
  Tensors at(int site, Tensors inputs, const SiteFn& compute) override {
    SiteCall c;
    c.site = site;
    c.inputs = std::move(inputs);
    auto out = compute(c);
    in[site] = c.inputs[0].sizes().vec();
    outs[site] = out[0].sizes().vec();
    ++calls[site];
    return out;
  }
  Ops& ops() override { return inner.ops(); }
  PassThroughHooks inner;
  std::map<int, std::vector<int64_t>> in, outs;
  std::map<int, int> calls;
};

at::Tensor run(Unet& m, const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
  PassThroughHooks h(m.linears());
  return m.forward(x, t, labels(y), h);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unet)

BOOST_AUTO_TEST_CASE(parameter_names_and_shapes) {
  Unet m(tiny_unet_options());
  std::map<std::string, std::vector<int64_t>> shapes;
  for (auto& [n, t] : m.named_tensors()) shapes[n] = t.sizes().vec();
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"conv_in.weight", {8, 1, 3, 3}},          {"t_embedder.0.weight", {16, 128}},
      {"y_embedder.weight", {11, 16}},           {"down.0.0.conv1.weight", {8, 8, 3, 3}},
      {"down.1.0.skip.weight", {16, 8, 1, 1}},   {"downsample.0.weight", {8, 8, 3, 3}},
      {"mid.0.emb.weight", {16, 16}},            {"mid_attn.qkv.weight", {48, 16}},
      {"up.0.0.conv1.weight", {8, 24, 3, 3}},    {"up.2.0.conv1.weight", {16, 32, 3, 3}},
      {"norm_out.weight", {8}},                  {"conv_out.weight", {1, 8, 3, 3}},
  };
  for (auto& [n, s] : expected) {
    BOOST_REQUIRE_MESSAGE(shapes.count(n), "missing parameter " << n);
    BOOST_CHECK_MESSAGE(shapes[n] == s, "shape of " << n);
  }
}

BOOST_AUTO_TEST_CASE(fresh_init_predicts_zero) {
  Unet m(tiny_unet_options());
  auto out = run(m, at::randn({2, 1, 8, 8}), at::full({2}, 10.0), at::zeros({2}, at::kLong));
  BOOST_CHECK(out.sizes() == at::IntArrayRef({2, 1, 8, 8}));
  BOOST_CHECK_EQUAL(out.abs().max().item<double>(), 0.0);
}

BOOST_AUTO_TEST_CASE(site_table_nesting_tags_and_flops) {
  Unet m(tiny_unet_options());
  const auto& s = m.sites();
  // Forward order; parents: the level-0 blocks and branches.0 in the model, level 1 in
  // branches.0, level 2 (with the mid blocks and the attention) in branches.1.
  const std::vector<std::string> names = {"model", "down.0.0", "branches.0", "down.1.0", "branches.1", "down.2.0",
                                          "mid.0", "mid.attn", "mid.1", "up.2.0", "up.1.0", "up.0.0"};
  const std::vector<int> parents = {-1, 0, 0, 2, 2, 4, 4, 4, 4, 4, 2, 0};
  BOOST_REQUIRE_EQUAL(s.size(), names.size());
  for (size_t i = 0; i < s.size(); ++i) {
    BOOST_CHECK_EQUAL(s[i].name, names[i]);
    BOOST_CHECK_EQUAL(s[i].parent, parents[i]);
  }
  BOOST_CHECK(s[2].kind == SiteKind::Branch && s[2].block == 0);
  BOOST_CHECK(s[4].kind == SiteKind::Branch && s[4].block == 1);
  BOOST_CHECK_EQUAL(m.branch_site(0), 2);
  BOOST_CHECK_EQUAL(m.branch_site(1), 4);
  BOOST_CHECK(s[7].kind == SiteKind::Attn);
  int block = 0;
  for (auto& site : s)
    if (site.kind == SiteKind::Block) BOOST_CHECK_EQUAL(site.block, block++);
  BOOST_CHECK_EQUAL(block, 8);
  // FLOPs per sample worked out by hand (2 per multiply-add; emb width 16, 128 frequencies):
  // e.g. down.0.0 = two 3x3 convs 8->8 on 64 pixels + the 16->8 embedding projection.
  const std::vector<double> flops = {23040, 147712, 18432, 115200, 18432, 37376,
                                     37376, 9216,   37376, 59904,  238080, 319744};
  for (size_t i = 0; i < s.size(); ++i) BOOST_CHECK_CLOSE(s[i].flops_per_sample, flops[i], 1e-9);
}

BOOST_AUTO_TEST_CASE(branch_sites_take_the_skip_and_return_deep_features_at_its_resolution) {
  Unet m(tiny_unet_options());
  cachelab::testing::randomize(m);
  ShapeHooks h(m.linears());
  m.forward(at::randn({3, 1, 8, 8}), at::full({3}, 500.0), labels(at::zeros({3}, at::kLong)), h);
  BOOST_CHECK_EQUAL(h.calls.size(), m.sites().size());  // every site visited once
  BOOST_CHECK(h.in[2] == std::vector<int64_t>({3, 8, 8, 8}));
  BOOST_CHECK(h.outs[2] == std::vector<int64_t>({3, 16, 8, 8}));
  BOOST_CHECK(h.in[4] == std::vector<int64_t>({3, 16, 4, 4}));
  BOOST_CHECK(h.outs[4] == std::vector<int64_t>({3, 16, 4, 4}));
  BOOST_CHECK(h.outs[7] == std::vector<int64_t>({3, 16, 2, 2}));
}

BOOST_AUTO_TEST_CASE(safetensors_round_trip_reproduces_the_output) {
  TempDir dir;
  Unet a(tiny_unet_options());
  cachelab::testing::randomize(a, 3);
  a.save(dir.file("u.safetensors"), {{"step", "7"}});
  auto o = tiny_unet_options();
  o.weights = dir.file("u.safetensors");
  Unet b(o);
  auto x = at::randn({2, 1, 8, 8});
  auto t = at::full({2}, 300.0);
  auto y = at::tensor({1, 10}, at::kLong);  // a class and the null label
  auto ya = run(a, x, t, y), yb = run(b, x, t, y);
  BOOST_CHECK(at::equal(ya, yb));
  BOOST_CHECK_GT(ya.abs().max().item<double>(), 0.0);
  BOOST_CHECK_EQUAL(read_safetensors(o.weights).metadata.at("step"), "7");
  // A file of another shape is refused.
  auto wide = tiny_unet_options();
  wide.channels = 12;
  wide.weights = o.weights;
  cachelab::testing::check_error([&] { Unet c(wide); }, {"configured model expects"});
}

BOOST_AUTO_TEST_CASE(null_label_needs_label_dropout) {
  auto o = tiny_unet_options();
  o.class_dropout_prob = 0;
  Unet m(o);
  cachelab::testing::check_error([&] { m.null_cond(labels(at::zeros({1}, at::kLong))); }, {"class_dropout_prob"});
}

BOOST_AUTO_TEST_SUITE_END()
