// Experiment files: composition, grid expansion, stable run ids, and every bad-input
// error naming file, line, key and what would be valid -- all before anything runs.
#include <boost/test/unit_test.hpp>

#include "framework/experiment.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::TempDir;
using cachelab::testing::check_error;

namespace {
const char* kBase = R"(backbone: {type: dit, input_size: 8, patch_size: 2, hidden_size: 32, depth: 4, num_heads: 2}
sampler: {type: ddim, steps: 6}
run: {samples: 2, batch: 2}
metrics: [psnr]
)";
}

BOOST_AUTO_TEST_SUITE(experiment)

BOOST_AUTO_TEST_CASE(variants_times_grid_in_a_fixed_order_with_stable_ids) {
  TempDir d;
  d.file("base.yaml", kBase);
  const std::string f = d.file("e.yaml", R"(base: base.yaml
variants:
  fora: {cache: {type: fora}}
  fb: {cache.type: fbcache}
sweep:
  seed: [0, 1]
  sampler.steps: [4, 6]
claims:
  - {left: "fora[seed=0,sampler.steps=4]", metric: psnr, op: ">", value: 10}
)");
  auto a = load_experiment(f, {});
  BOOST_REQUIRE_EQUAL(a.runs.size(), 8u);
  BOOST_CHECK_EQUAL(a.runs[0].name, "fora[seed=0,sampler.steps=4]");
  BOOST_CHECK_EQUAL(a.runs[1].name, "fora[seed=0,sampler.steps=6]");  // last key fastest
  BOOST_CHECK_EQUAL(a.runs[2].name, "fora[seed=1,sampler.steps=4]");
  BOOST_CHECK_EQUAL(a.runs[4].name, "fb[seed=0,sampler.steps=4]");
  // 4 distinct (seed, steps) pairs -> 4 references, shared by fora and fb.
  BOOST_CHECK_EQUAL(a.references.size(), 4u);
  BOOST_CHECK_EQUAL(a.runs[0].reference_id, a.runs[4].reference_id);
  auto b = load_experiment(f, {});
  for (size_t i = 0; i < a.runs.size(); ++i) BOOST_CHECK_EQUAL(a.runs[i].run_id, b.runs[i].run_id);
  // The resolved config writes every default out.
  BOOST_CHECK(a.runs[0].resolved_yaml.find("warmup_steps") != std::string::npos);
  // A CLI override changes the ids.
  auto c = load_experiment(f, {"run.samples=4"});
  BOOST_CHECK_NE(a.runs[0].run_id, c.runs[0].run_id);
}

// Without variants and caching, an experiment measures references only: one per sweep point.
BOOST_AUTO_TEST_CASE(uncached_experiment_is_its_references) {
  TempDir d;
  d.file("base.yaml", kBase);
  auto one = load_experiment(d.file("e.yaml", "base: base.yaml\n"), {});
  BOOST_CHECK_EQUAL(one.runs.size(), 0u);
  BOOST_CHECK_EQUAL(one.references.size(), 1u);
  auto grid = load_experiment(d.file("g.yaml", "base: base.yaml\nsweep: {run.cfg_scale: [1.5, 4]}\n"), {});
  BOOST_CHECK_EQUAL(grid.runs.size(), 0u);
  BOOST_REQUIRE_EQUAL(grid.references.size(), 2u);
  BOOST_CHECK(grid.references[1].resolved_yaml.find("cfg_scale: 4") != std::string::npos);
  // With a cache, the sweep's runs are kept.
  auto cached = load_experiment(d.file("c.yaml", "base: base.yaml\ncache: {type: fora}\nsweep: {seed: [0, 1]}\n"), {});
  BOOST_CHECK_EQUAL(cached.runs.size(), 2u);
}

// A masked LM's decoding rule is a method: every variant is measured against the baseline decoder.
BOOST_AUTO_TEST_CASE(masked_lm_references_decode_with_the_baseline) {
  TempDir d;
  auto e = load_experiment(d.file("m.yaml", R"(backbone: {type: tiny_mdlm, hidden_size: 16, max_length: 24}
pipeline: {type: mdlm, prompt_length: 8, gen_length: 16, block_length: 8, steps_per_block: 8}
run: {samples: 2, batch: 2}
variants:
  dual: {ops: [{type: dual_kv}]}
  threshold: {pipeline.decoder: {type: threshold, threshold: 0.8}}
  both: {ops: [{type: dual_kv}], pipeline.decoder: {type: threshold}}
  smooth: {pipeline.decoder: {type: threshold}, pipeline.smooth_weight: 0.3, pipeline.threshold_decay: 0.01}
)"), {});
  BOOST_REQUIRE_EQUAL(e.runs.size(), 4u);
  BOOST_REQUIRE_EQUAL(e.references.size(), 1u);
  BOOST_CHECK_EQUAL(e.runs[0].reference_id, e.runs[1].reference_id);
  BOOST_CHECK_EQUAL(e.runs[1].reference_id, e.runs[2].reference_id);
  BOOST_CHECK_EQUAL(e.runs[2].reference_id, e.runs[3].reference_id);  // iteration smoothing is decoding too
  BOOST_CHECK(e.references[0].resolved_yaml.find("smooth") == std::string::npos);
  BOOST_CHECK(e.runs[1].resolved_yaml.find("threshold: 0.8") != std::string::npos);
  BOOST_CHECK(e.references[0].resolved_yaml.find("threshold") == std::string::npos);
  BOOST_CHECK_NE(e.runs[1].run_id, e.runs[2].run_id);
}

// `reference_run`: a bfloat16 variant measured against float32 references, one reference for
// every dtype of variant; only dtype and device may differ.
BOOST_AUTO_TEST_CASE(reference_run_sets_the_references_dtype) {
  TempDir d;
  d.file("base.yaml", kBase);
  auto e = load_experiment(d.file("e.yaml", R"(base: base.yaml
reference_run: {dtype: float32}
variants:
  bf16: {run.dtype: bfloat16}
  bf16_fora: {run.dtype: bfloat16, cache: {type: fora}}
  fp32_fora: {cache: {type: fora}}
)"), {});
  BOOST_REQUIRE_EQUAL(e.runs.size(), 3u);
  BOOST_REQUIRE_EQUAL(e.references.size(), 1u);  // all three against one float32 reference
  BOOST_CHECK_EQUAL(e.runs[0].reference_id, e.runs[2].reference_id);
  BOOST_CHECK(e.runs[0].resolved_yaml.find("dtype: bfloat16") != std::string::npos);
  BOOST_CHECK(e.references[0].resolved_yaml.find("dtype: float32") != std::string::npos);
  BOOST_CHECK(e.references[0].resolved_yaml.find("bfloat16") == std::string::npos);
  // Without it, a bfloat16 variant gets a bfloat16 reference of its own.
  auto plain = load_experiment(d.file("p.yaml", "base: base.yaml\nvariants:\n  bf16: {run.dtype: bfloat16}\n  "
                                                "fp32_fora: {cache: {type: fora}}\n"), {});
  BOOST_CHECK_EQUAL(plain.references.size(), 2u);
  check_error([&] { load_experiment(d.file("b.yaml", "base: base.yaml\nreference_run: {samples: 4}\n"), {}); },
              {"reference_run", "dtype and device", "samples"});
  check_error([&] { load_experiment(d.file("c.yaml", "base: base.yaml\nreference_run: {dtype: float64}\n"), {}); },
              {"dtype", "float64"});
}

BOOST_AUTO_TEST_CASE(typo_in_a_component_key) {
  TempDir d;
  d.file("base.yaml", kBase);
  const std::string f = d.file("e.yaml", "base: base.yaml\ncache:\n  type: fora\n  intervall: 3\n");
  check_error([&] { load_experiment(f, {}); }, {"e.yaml:4", "cache.intervall", "did you mean `interval`"});
}

BOOST_AUTO_TEST_CASE(wrong_value_type) {
  TempDir d;
  d.file("base.yaml", kBase);
  const std::string f = d.file("e.yaml", "base: base.yaml\ncache: {type: fora, interval: three}\n");
  check_error([&] { load_experiment(f, {}); }, {"e.yaml:2", "cache.interval", "three", "integer"});
  // The same through a CLI override.
  const std::string g = d.file("g.yaml", "base: base.yaml\ncache: {type: fora}\n");
  check_error([&] { load_experiment(g, {"cache.interval=2.5"}); }, {"command line", "cache.interval", "2.5"});
}

BOOST_AUTO_TEST_CASE(unknown_component_and_top_level_key) {
  TempDir d;
  d.file("base.yaml", kBase);
  const std::string f = d.file("e.yaml", "base: base.yaml\nvariants:\n  x: {cache: {type: fbcach}}\n");
  check_error([&] { load_experiment(f, {}); }, {"e.yaml:3", "fbcach", "did you mean `fbcache`", "fora"});
  const std::string g = d.file("g.yaml", "base: base.yaml\nsampler_: {type: ddim}\n");
  check_error([&] { load_experiment(g, {}); }, {"g.yaml:2", "sampler_", "did you mean `sampler`"});
  const std::string h = d.file("h.yaml", "base: base.yaml\nmetrics: [psnr, fidd]\n");
  check_error([&] { load_experiment(h, {}); }, {"h.yaml:2", "fidd", "did you mean `fid`"});
}

BOOST_AUTO_TEST_CASE(missing_files) {
  TempDir d;
  check_error([&] { load_experiment(d.path + "/nope.yaml", {}); }, {"nope.yaml", "not found"});
  const std::string f = d.file("e.yaml", "base: missing_preset.yaml\n");
  check_error([&] { load_experiment(f, {}); }, {"e.yaml:1", "missing_preset.yaml", "looked in"});
}

BOOST_AUTO_TEST_CASE(claims_are_checked) {
  TempDir d;
  d.file("base.yaml", kBase);
  const std::string f = d.file("e.yaml", R"(base: base.yaml
variants: {fora_n2: {cache: {type: fora, interval: 2}}}
claims:
  - {left: fora_n3, metric: psnr, op: ">", value: 1}
)");
  check_error([&] { load_experiment(f, {}); }, {"e.yaml:4", "fora_n3", "did you mean `fora_n2`"});
  const std::string g = d.file("g.yaml", R"(base: base.yaml
variants: {fora_n2: {cache: {type: fora, interval: 2}}}
claims:
  - {left: fora_n2, metric: psnr, op: "=>", value: 1}
)");
  check_error([&] { load_experiment(g, {}); }, {"g.yaml:4", "=>"});
}

BOOST_AUTO_TEST_SUITE_END()
