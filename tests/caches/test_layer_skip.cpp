// layer_skip (static layer skipping): a skipped block passes its input on; what it must show:
// skipping a block that is an identity map (its output projections zeroed) reproduces the
// uncached run bit for bit, skipping a real block changes the samples, the FLOPs drop by
// exactly the skipped blocks' share, and the profile (`layers: []`) logs every block's
// input-output cosine. Also on the masked LM under a K/V cache.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/layer_skip.h"
#include "caches/seq_kv.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "tests/caches/fixture.h"
#include "tests/caches/mdlm_fixture.h"

using namespace cachelab;

namespace {

LayerSkipOptions skip(std::vector<int> layers) {
  LayerSkipOptions o;
  o.layers = std::move(layers);
  return o;
}

// The FLOPs one sample pays for block `b` per step: the block site and every site inside it.
double block_flops(const std::vector<Site>& sites, int b) {
  double f = 0;
  for (const auto& s : sites)
    if (s.block == b && s.stream == 0) f += s.flops_per_sample;
  return f;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(layer_skip, Fixture)

BOOST_AUTO_TEST_CASE(profile_only_is_the_uncached_run_and_logs_every_block) {
  LayerSkipPolicy p(skip({}));
  auto t = with(p);
  BOOST_CHECK(at::equal(t.samples, ref_traj.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
  const int e = cachelab::testing::extra_id(t, "block_io_cosine");
  BOOST_REQUIRE_GE(e, 0);
  int logged = 0;
  for (const auto& s : model.sites())
    if (s.kind == SiteKind::Block) {
      const double c = t.steps[3].site_extra[size_t(e)][size_t(site(s.name))];
      BOOST_CHECK(std::isfinite(c) && c >= -1.0 - 1e-6 && c <= 1.0 + 1e-6);
      BOOST_TEST_MESSAGE(s.name << " input-output cosine at step 3: " << c);
      ++logged;
    }
  BOOST_CHECK_GE(logged, 2);
}

BOOST_AUTO_TEST_CASE(skipping_an_identity_block_is_bitwise_the_uncached_run) {
  // Zero block 1's attention and MLP output projections: the block is then x + gate * 0 = x.
  NoCache none{NoCacheOptions{}};
  c10::NoGradGuard no_grad;
  for (const auto& l : model.linears())
    if (l.name == "blocks.1.attn.proj" || l.name == "blocks.1.mlp.fc2") {
      l.weight.zero_();
      if (l.bias.defined()) l.bias.zero_();
    }
  ReferenceTrace ref1;
  auto r = cachelab::testing::run_image(model, sampler, {&none}, run, nullptr, &ref1);
  LayerSkipPolicy p(skip({1}));
  auto t = cachelab::testing::run_image(model, sampler, {&p}, run, &ref1, nullptr);
  BOOST_CHECK(at::equal(t.samples, r.samples));
  // FLOPs: exactly block 1's share of every model evaluation dropped.
  double per_eval = 0;
  for (const auto& s : model.sites()) per_eval += s.flops_per_sample;
  const double want = r.flops * (1.0 - block_flops(model.sites(), 1) / per_eval);
  BOOST_CHECK_CLOSE(t.flops, want, 1e-9);
  BOOST_TEST_MESSAGE("layer_skip [1] FLOPs / uncached: " << t.flops / r.flops);
}

BOOST_AUTO_TEST_CASE(skipping_a_real_block_changes_the_samples) {
  LayerSkipPolicy p(skip({0}));
  auto t = with(p);
  const double err = (t.samples - ref_traj.samples).abs().max().item<double>();
  BOOST_TEST_MESSAGE("layer_skip [0] max |sample - reference|: " << err);
  BOOST_CHECK_GT(err, 1e-3);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  const int b0 = site("blocks.0");
  BOOST_CHECK_EQUAL(count(t, b0, Decision::Reuse), int(t.steps.size()));
}

// diffusers' LayerSkip skip_attention / skip_ff: skipping a sub-layer is, bit for bit, the model
// whose sub-layer output projection is zero, and it saves exactly that sub-layer's FLOPs.
BOOST_AUTO_TEST_CASE(skipping_a_sub_layer_is_zeroing_its_branch) {
  for (const std::string part : {"attn", "mlp"}) {
    cachelab::testing::TempDir d;
    model.save(d.file("w.safetensors"), {});
    Dit zeroed(cachelab::testing::tiny_dit_options());
    zeroed.load(d.file("w.safetensors"));
    {
      c10::NoGradGuard no_grad;
      for (const auto& l : zeroed.linears())
        if (l.name == (part == "attn" ? "blocks.2.attn.proj" : "blocks.2.mlp.fc2")) {
          l.weight.zero_();
          if (l.bias.defined()) l.bias.zero_();
        }
    }
    NoCache none{NoCacheOptions{}};
    ReferenceTrace unused;
    const auto want = cachelab::testing::run_image(zeroed, sampler, {&none}, run, nullptr, &unused);
    LayerSkipOptions o = skip({2});
    o.parts = {part};
    LayerSkipPolicy p(o);
    const auto t = with(p);
    BOOST_CHECK_MESSAGE(at::equal(t.samples, want.samples), part);
    const Site& s = model.sites()[size_t(site("blocks.2." + part))];
    double per_eval = 0;
    for (const auto& x : model.sites()) per_eval += x.flops_per_sample;
    BOOST_CHECK_CLOSE(t.flops, ref_traj.flops * (1.0 - s.flops_per_sample / per_eval), 1e-9);
    BOOST_CHECK_EQUAL(count(t, site("blocks.2." + part), Decision::Reuse), int(t.steps.size()));
    BOOST_CHECK_EQUAL(count(t, site("blocks.2"), Decision::Reuse), 0);
  }
}

BOOST_AUTO_TEST_CASE(bad_settings_are_refused) {
  cachelab::testing::check_error(
      [] { caches().resolve(parse_config_string("type: layer_skip\nlayers: [0]\nparts: [block, attn]\n", "e.yaml")); },
      {"parts", "alone"});
  cachelab::testing::check_error(
      [] { caches().resolve(parse_config_string("type: layer_skip\nlayers: [0]\nparts: [ffn]\n", "e.yaml")); },
      {"parts", "mlp"});
  LayerSkipPolicy p(skip({99}));
  BOOST_CHECK_THROW(with(p), Error);
  BOOST_CHECK_THROW(caches().resolve(parse_config_string("type: layer_skip\nlayers: [-1]\n", "exp.yaml")), Error);
  auto node = caches().resolve(parse_config_string("type: layer_skip\nlayers: [0, 2]\n", "exp.yaml"));
  BOOST_CHECK(caches().build(node) != nullptr);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(layer_skip_mdlm, cachelab::testing::MdlmFixture)

BOOST_AUTO_TEST_CASE(skips_under_a_kv_cache_and_counts_what_ran) {
  LayerSkipPolicy p(skip({0}));
  NoCache none{NoCacheOptions{}};
  RunParts parts;
  parts.backbone = &model;
  parts.pipeline = &pipe;
  parts.layers = {&p};
  DualKvCache kv(DualKvOptions{});
  parts.ops = &kv;
  auto t = run_trajectory(parts, run, &ref, nullptr);
  parts.layers = {&none};
  auto t_kv = run_trajectory(parts, run, &ref, nullptr);
  BOOST_CHECK_LT(t.flops, t_kv.flops);
  BOOST_CHECK_EQUAL(t.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  BOOST_TEST_MESSAGE("dual_kv + layer_skip [0] FLOPs / dual_kv: " << t.flops / t_kv.flops);
}

BOOST_AUTO_TEST_SUITE_END()

// The runner's cap on the reference's kept site outputs (CACHELAB_MAX_PROBE_BYTES): a reference
// whose site outputs outgrow it keeps none, and its variants log no site-level error, while
// everything else (samples, FLOPs, the final error) is unchanged.
BOOST_FIXTURE_TEST_SUITE(reference_probe_cap, Fixture)

BOOST_AUTO_TEST_CASE(an_oversized_reference_keeps_no_site_outputs) {
  NoCache none{NoCacheOptions{}};
  setenv("CACHELAB_MAX_PROBE_BYTES", "10000", 1);
  ReferenceTrace small;
  auto r = cachelab::testing::run_image(model, sampler, {&none}, run, nullptr, &small);
  unsetenv("CACHELAB_MAX_PROBE_BYTES");
  BOOST_CHECK(at::equal(r.samples, ref_traj.samples));
  BOOST_CHECK_EQUAL(r.flops, ref_traj.flops);
  for (const auto& row : small.probe)
    for (const auto& p : row) BOOST_CHECK(!p.defined());
  bool kept = false;  // the default cap keeps them all
  for (const auto& row : ref.probe)
    for (const auto& p : row) kept = kept || p.defined();
  BOOST_CHECK(kept);
  LayerSkipPolicy p(skip({0}));
  auto t = cachelab::testing::run_image(model, sampler, {&p}, run, &small, nullptr);
  for (const auto& s : t.steps) {
    for (double e : s.err_ref) BOOST_CHECK(std::isnan(e));
    BOOST_CHECK(std::isfinite(s.err_ref_rel_l1));
  }
}

BOOST_AUTO_TEST_SUITE_END()
