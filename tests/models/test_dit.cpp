// DiT: reference parameter names, safetensors round-trip and its error messages.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <fstream>

#include "framework/safetensors.h"
#include "models/dit.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::TempDir;
using cachelab::testing::check_error;

BOOST_AUTO_TEST_SUITE(dit)

BOOST_AUTO_TEST_CASE(parameter_names_and_shapes_match_the_reference_dit) {
  DitOptions o;  // hidden 128, depth 8, patch 4, 1 channel, 10 classes
  Dit m(o);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (auto& [n, t] : m.named_tensors()) shapes[n] = t.sizes().vec();
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"x_embedder.proj.weight", {128, 1, 4, 4}},
      {"x_embedder.proj.bias", {128}},
      {"pos_embed", {1, 64, 128}},
      {"t_embedder.mlp.0.weight", {128, 256}},
      {"t_embedder.mlp.2.weight", {128, 128}},
      {"y_embedder.embedding_table.weight", {11, 128}},
      {"blocks.3.attn.qkv.weight", {384, 128}},
      {"blocks.3.attn.proj.bias", {128}},
      {"blocks.3.mlp.fc1.weight", {512, 128}},
      {"blocks.7.mlp.fc2.weight", {128, 512}},
      {"blocks.3.adaLN_modulation.1.weight", {768, 128}},
      {"final_layer.linear.weight", {16, 128}},
      {"final_layer.adaLN_modulation.1.weight", {256, 128}},
  };
  for (auto& [n, s] : expected) {
    BOOST_REQUIRE_MESSAGE(shapes.count(n), "missing parameter " << n);
    BOOST_CHECK_MESSAGE(shapes[n] == s, "shape of " << n);
  }
  // 8 blocks x 10 tensors, x_embedder (2), t_embedder (4), pos_embed, label table, final layer (4).
  BOOST_CHECK_EQUAL(shapes.size(), size_t(8 * 10 + 2 + 4 + 1 + 1 + 4));
}

BOOST_AUTO_TEST_CASE(adaln_zero_init_makes_the_output_zero) {
  // The reference init zeroes the final layer: a fresh DiT predicts exactly 0.
  Dit m(cachelab::testing::tiny_dit_options());
  PassThroughHooks h(m.linears());
  auto out = m.forward(at::randn({2, 1, 8, 8}), at::full({2}, 10.0), cachelab::testing::labels(at::zeros({2}, at::kLong)), h);
  BOOST_CHECK_EQUAL(out.abs().max().item<double>(), 0.0);
  BOOST_CHECK(out.sizes() == at::IntArrayRef({2, 1, 8, 8}));
}

BOOST_AUTO_TEST_CASE(sites_table_and_flops) {
  auto o = cachelab::testing::tiny_dit_options();
  Dit m(o);
  const auto& s = m.sites();
  BOOST_REQUIRE_EQUAL(s.size(), size_t(2 + 3 * o.depth));
  BOOST_CHECK_EQUAL(s[0].name, "model");
  BOOST_CHECK_EQUAL(s[1].name, "body");
  BOOST_CHECK_EQUAL(s[2 + 3 * 2 + 1].name, "blocks.2.attn");
  BOOST_CHECK_EQUAL(s[2 + 3 * 2 + 1].parent, 2 + 3 * 2);
  // MLP: two matmuls N x D x 4D, 2 FLOPs per multiply-add; N = 16 tokens, D = 32.
  BOOST_CHECK_CLOSE(s[4].flops_per_sample, 4.0 * 16 * 32 * 128, 1e-9);
}

BOOST_AUTO_TEST_CASE(safetensors_round_trip_reproduces_outputs) {
  TempDir dir;
  auto o = cachelab::testing::tiny_dit_options();
  Dit a(o);
  cachelab::testing::randomize(a);
  const std::string path = dir.file("w.safetensors");
  a.save(path, {{"note", "test"}});
  o.weights = path;
  Dit b(o);
  PassThroughHooks ha(a.linears()), hb(b.linears());
  auto x = at::randn({3, 1, 8, 8});
  auto t = at::full({3}, 500.0);
  auto y = cachelab::testing::labels(at::arange(3, at::kLong));
  BOOST_CHECK(at::equal(a.forward(x, t, y, ha), b.forward(x, t, y, hb)));
  BOOST_CHECK_EQUAL(read_safetensors(path).metadata.at("note"), "test");
}

BOOST_AUTO_TEST_CASE(bad_weight_files_give_clear_errors) {
  TempDir dir;
  auto o = cachelab::testing::tiny_dit_options();
  o.weights = dir.path + "/missing.safetensors";
  check_error([&] { Dit m(o); }, {"missing.safetensors", "not found", "cachelab train"});

  Dit small(cachelab::testing::tiny_dit_options());
  const std::string path = dir.file("small.safetensors");
  small.save(path, {});
  auto wider = cachelab::testing::tiny_dit_options();
  wider.hidden_size = 64;
  wider.weights = path;
  check_error([&] { Dit m(wider); }, {"small.safetensors", "shape", "expects"});

  // Truncate the file: cut its data in half.
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size / 2);
  auto same = cachelab::testing::tiny_dit_options();
  same.weights = path;
  check_error([&] { Dit m(same); }, {"small.safetensors", "truncated"});

  const std::string junk = dir.file("junk.safetensors", "this is not a safetensors file at all");
  same.weights = junk;
  check_error([&] { Dit m(same); }, {"junk.safetensors", "not a safetensors file"});
}

BOOST_AUTO_TEST_SUITE_END()
