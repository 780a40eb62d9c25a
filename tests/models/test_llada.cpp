// LLaDA against the public modeling code (NVlabs/Fast-dLLM llada/model/modeling_llada.py) and
// ML-GSAI/LLaDA's generate.py on random weights, with fixtures from tools/fixtures/llada.py:
// d_model 64, 2 layers, 4 heads, MLP 160, 256 embeddings (vocabulary 240), MASK = 230, bf16
// weights in one file and as the public sharded layout (config.json, index, two shards).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "framework/config.h"
#include "framework/pipeline.h"
#include "framework/safetensors.h"
#include "models/llada.h"
#include "models/mdlm_pipeline.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::check_error;
using cachelab::testing::TempDir;

namespace {

const std::string kDir = "tests/fixtures/";
const std::string kConfig = kDir + "llada_checkpoint/config.json";
const std::string kIndex = kDir + "llada_checkpoint/model.safetensors.index.json";
const std::string kWeights = kDir + "llada_weights.safetensors";

LladaOptions fixture_options(const std::string& weights = kWeights) {
  LladaOptions o;
  o.config = kConfig;
  o.weights = weights;
  return o;
}

std::map<std::string, at::Tensor> data() {
  auto f = read_safetensors(kDir + "llada_data.safetensors");
  return {f.tensors.begin(), f.tensors.end()};
}

Cond span(int64_t context, int64_t block_end = -1) {
  Cond c;
  c.context = context;
  c.block_end = block_end;
  return c;
}

double max_err(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Computes every site, counts forwards (model-site calls) and records each site's FLOPs.
struct CountingHooks final : Hooks {
  explicit CountingHooks(Ops& o) : o_(o) {}
  Tensors at(int site, Tensors inputs, const SiteFn& compute) override {
    if (site == Llada::kSiteModel) ++forwards;
    SiteCall call;
    call.site = site;
    call.inputs = std::move(inputs);
    SiteLog log;
    call.log = &log;
    return compute(call);
  }
  Tensors at(int site, Tensors inputs, const SiteFn& compute, double flops) override {
    flops_of[site] = flops;
    return at(site, std::move(inputs), compute);
  }
  Ops& ops() override { return o_; }
  int forwards = 0;
  std::map<int, double> flops_of;

 private:
  Ops& o_;
};

// The runner's side of the mdlm pipeline, reduced to what the test needs: dense ops, no layers.
struct BareDriver final : StepDriver {
  explicit BareDriver(const std::vector<LinearRef>& linears) : hooks_(ops_) { ops_.begin_run(linears, nullptr); }
  Hooks& hooks() override { return hooks_; }
  void begin_step(const StepIndex&) override { ++steps; }
  bool end_step(const at::Tensor&) override { return true; }
  at::Tensor randn(at::IntArrayRef shape) override { return at::randn(shape); }
  at::TensorOptions options() const override { return at::TensorOptions().dtype(at::kFloat); }
  int steps = 0;
  DenseOps ops_;
  CountingHooks hooks_;
};

// A minimal exact K/V reuse: the first forward records every layer's keys and values; later
// forwards compute only `rows` (per sample) and attend to the recorded keys with the fresh
// ones written at the rows' positions. With unchanged tokens this is the full forward.
struct ReplayKv final : Ops {
  at::Tensor rows;  // undefined: record
  std::vector<at::Tensor> k, v;
  int seq_rows_calls = 0;
  SeqForward seen;
  SeqPlan seq_begin(const SeqForward& f) override {
    seen = f;
    SeqPlan p;
    p.rows = rows;
    return p;
  }
  void seq_rows(int, at::Tensor& r, at::Tensor&) override {
    ++seq_rows_calls;
    BOOST_CHECK(!rows.defined() || at::equal(r, rows));
  }
  at::Tensor attention(const AttnCall& c, const at::Tensor& q, const at::Tensor& kk, const at::Tensor& vv) override {
    BOOST_CHECK(at::equal(c.q_positions, c.kv_positions));
    if (!rows.defined()) {
      k.push_back(kk);
      v.push_back(vv);
      return dense_attention(q, kk, vv, c.mask);
    }
    auto idx = c.kv_positions.unsqueeze(1).unsqueeze(-1).expand({kk.size(0), kk.size(1), kk.size(2), kk.size(3)});
    return dense_attention(q, k[size_t(c.layer)].scatter(2, idx, kk), v[size_t(c.layer)].scatter(2, idx, vv), c.mask);
  }
};

// The full-width case runs only where CACHELAB_FULL_FIXTURES names a folder.
boost::test_tools::assertion_result full_fixtures(boost::unit_test::test_unit_id) {
  const char* dir = std::getenv("CACHELAB_FULL_FIXTURES");
  return dir && *dir;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(llada)

BOOST_AUTO_TEST_CASE(config_json_sets_the_architecture) {
  const LladaOptions a = llada_architecture(fixture_options());
  BOOST_CHECK_EQUAL(a.d_model, 64);
  BOOST_CHECK_EQUAL(a.n_layers, 2);
  BOOST_CHECK_EQUAL(a.n_heads, 4);
  BOOST_CHECK_EQUAL(a.mlp_hidden_size, 160);
  BOOST_CHECK_EQUAL(a.vocab_size, 256);  // embedding_size: the logits' width
  BOOST_CHECK_EQUAL(a.mask_token_id, 230);
  BOOST_CHECK_EQUAL(a.rope_theta, 500000.0);
  BOOST_CHECK_EQUAL(a.rms_norm_eps, 1e-5);
  BOOST_CHECK_EQUAL(a.max_sequence_length, 64);
  // LLaDA-8B's widths are the defaults of the explicit keys.
  const LladaOptions d;
  BOOST_CHECK(d.d_model == 4096 && d.n_layers == 32 && d.n_heads == 32 && d.mlp_hidden_size == 12288 &&
              d.vocab_size == 126464 && d.mask_token_id == 126336 && d.rope_theta == 500000.0);
}

BOOST_AUTO_TEST_CASE(forward_equals_the_reference_modeling_code) {
  c10::InferenceMode g;
  auto d = data();
  Llada m(fixture_options());
  BOOST_CHECK_EQUAL(m.vocab_size(), 256);
  BOOST_CHECK_EQUAL(m.mask_id(), 230);
  BOOST_CHECK_EQUAL(m.named_tensors().size(), size_t(2 + 2 * 9 + 1));
  BOOST_CHECK_EQUAL(m.linears()[size_t(0)].name, "model.transformer.blocks.0.q_proj");
  BOOST_CHECK_EQUAL(m.linears().back().name, "model.transformer.ff_out");
  const auto& ids = d.at("ids");
  BOOST_REQUIRE(ids.eq(230).any().item<bool>());  // MASK among the inputs
  DenseOps ops;
  ops.begin_run(m.linears(), nullptr);
  CountingHooks h(ops);
  auto logits = m.forward(ids, at::zeros({2}), span(0), h);
  BOOST_REQUIRE(logits.sizes() == d.at("logits").sizes());
  const double err = max_err(logits, d.at("logits")), scale = d.at("logits").abs().max().item<double>();
  BOOST_TEST_MESSAGE("llada forward vs modeling_llada.py: max abs error " << err << " (logits up to " << scale << ")");
  BOOST_CHECK_LT(err, 2e-5);
  // A context and a block end select rows [context, block_end) of the same logits.
  auto part = m.forward(ids, at::zeros({2}), span(8, 16), h);
  BOOST_REQUIRE(part.sizes() == at::IntArrayRef({2, 8, 256}));
  BOOST_CHECK_LT(max_err(part, d.at("logits").narrow(1, 8, 8)), 2e-5);
  // FLOPs of what ran: all 24 rows attending to 24 keys; the head over the 8 returned rows.
  const double D = 64, M = 160, V = 256;
  BOOST_CHECK_EQUAL(h.flops_of.at(Llada::block_site(1) + 1), 2 * 24 * D * 3 * D + 4 * 24 * 24 * D + 2 * 24 * D * D);
  BOOST_CHECK_EQUAL(h.flops_of.at(Llada::block_site(1) + 2), 6 * 24 * D * M);
  BOOST_CHECK_EQUAL(h.flops_of.at(Llada::kSiteModel), 2 * 8 * D * V);
  // bf16 compute (the checkpoint's own dtype) stays close.
  m.to(at::kCPU, at::kBFloat16);
  const double err16 = max_err(m.forward(ids, at::zeros({2}), span(0), h), d.at("logits"));
  BOOST_TEST_MESSAGE("llada bf16 forward vs float32 reference: max abs error " << err16);
  BOOST_CHECK_LT(err16, 0.1 * scale);
}

BOOST_AUTO_TEST_CASE(rows_per_sample_use_their_own_rope_positions) {
  c10::InferenceMode g;
  auto d = data();
  Llada m(fixture_options());
  ReplayKv kv;
  kv.begin_run(m.linears(), nullptr);
  CountingHooks h(kv);
  const auto& ids = d.at("ids");
  Cond c = span(8, 16);
  c.step = 5;
  m.forward(ids, at::zeros({2}), c, h);  // records every layer's keys and values
  BOOST_CHECK_EQUAL(kv.seen.batch, 2);
  BOOST_CHECK_EQUAL(kv.seen.length, 24);
  BOOST_CHECK_EQUAL(kv.seen.context, 8);
  BOOST_CHECK_EQUAL(kv.seen.block_end, 16);
  BOOST_CHECK_EQUAL(kv.seen.num_layers, 2);
  BOOST_CHECK_EQUAL(kv.seen.step, 5);
  BOOST_CHECK(kv.seen.kind == SequenceKind::Bidirectional && at::equal(kv.seen.tokens, ids));
  BOOST_CHECK_EQUAL(kv.seq_rows_calls, 3);  // before each block and before the head
  // Sample 0 computes positions 8..23, sample 1 positions 4..19: both cover the block [8, 16).
  kv.rows = at::stack({at::arange(8, 24, at::kLong), at::arange(4, 20, at::kLong)});
  auto part = m.forward(ids, at::zeros({2}), c, h);
  const double err = max_err(part, d.at("logits").narrow(1, 8, 8));
  BOOST_TEST_MESSAGE("llada with 16 of 24 rows (different per sample) vs the reference: max abs error " << err);
  BOOST_CHECK_LT(err, 2e-5);
  const double D = 64;
  BOOST_CHECK_EQUAL(h.flops_of.at(Llada::block_site(0) + 1), 2 * 16 * D * 3 * D + 4 * 16 * 24 * D + 2 * 16 * D * D);
  // Block positions the rows lack get zero logits (a uniform prediction); the others are exact.
  kv.rows = at::stack({at::arange(0, 12, at::kLong), at::arange(4, 16, at::kLong)});
  auto some = m.forward(ids, at::zeros({2}), c, h);
  BOOST_CHECK(some[0].narrow(0, 4, 4).eq(0).all().item<bool>());  // sample 0 lacks positions 12..15
  BOOST_CHECK_LT(max_err(some[0].narrow(0, 0, 4), d.at("logits")[0].narrow(0, 8, 4)), 2e-5);
  BOOST_CHECK_LT(max_err(some[1], d.at("logits")[1].narrow(0, 8, 8)), 2e-5);
}

BOOST_AUTO_TEST_CASE(low_confidence_remasking_reproduces_generate_py) {
  c10::InferenceMode g;
  auto d = data();
  Llada m(fixture_options());
  MdlmPipelineOptions po;
  po.gen_length = int(d.at("gen_length").item<int64_t>());
  po.block_length = int(d.at("block_length").item<int64_t>());
  po.steps_per_block = int(d.at("steps").item<int64_t>()) / (po.gen_length / po.block_length);
  MdlmPipeline pipe(po);
  BareDriver driver(m.linears());
  PipelineInputs in;
  in.backbone = &m;
  in.cond.tokens = d.at("prompt");
  in.batch = 2;
  auto out = pipe.run(in, driver);
  BOOST_REQUIRE(out.defined() && out.sizes() == d.at("generated").sizes());
  const int64_t differ = out.ne(d.at("generated")).sum().item<int64_t>();
  const int64_t forwards = d.at("forwards").item<int64_t>();
  BOOST_TEST_MESSAGE("llada + mdlm vs generate.py (gen 16, block 8, 8 steps): " << differ << " of " << out.numel()
                     << " tokens differ, " << driver.hooks_.forwards << " forwards (" << forwards
                     << " in the reference)");
  BOOST_CHECK_EQUAL(differ, 0);
  BOOST_CHECK_EQUAL(driver.hooks_.forwards, forwards);
  BOOST_CHECK_EQUAL(driver.steps, 8);
}

BOOST_AUTO_TEST_CASE(sharded_checkpoint_loads_the_same_bf16_tensors) {
  c10::InferenceMode g;
  Llada one(fixture_options()), sharded(fixture_options(kIndex));
  auto a = one.named_tensors(), b = sharded.named_tensors();
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    BOOST_CHECK_EQUAL(a[i].first, b[i].first);
    BOOST_CHECK(b[i].second.scalar_type() == at::kFloat);
    BOOST_CHECK_MESSAGE(at::equal(a[i].second, b[i].second), a[i].first);
  }
  // Both differ from the random initialisation, and bf16 values arrived exactly.
  auto wte = b.front().second;
  BOOST_CHECK(at::equal(wte, wte.to(at::kBFloat16).to(at::kFloat)));
  Llada fresh(fixture_options(""));
  BOOST_CHECK(!at::equal(fresh.named_tensors().front().second, wte));
}

BOOST_AUTO_TEST_CASE(gradients_reach_every_parameter) {
  LladaOptions o;  // a small model of the architecture, as `cachelab train` makes one
  o.d_model = 16, o.n_layers = 2, o.n_heads = 2, o.mlp_hidden_size = 24, o.vocab_size = 12, o.mask_token_id = 10;
  o.max_sequence_length = 8;
  Llada m(o);
  DenseOps ops;
  ops.begin_run(m.linears(), nullptr);
  CountingHooks h(ops);
  auto logits = m.forward(at::randint(0, 12, {2, 8}, at::kLong), at::zeros({2}), span(0), h);
  BOOST_REQUIRE(logits.sizes() == at::IntArrayRef({2, 8, 12}));
  logits.logsumexp(-1).sum().backward();
  BOOST_CHECK_EQUAL(m.trainable_parameters().size(), size_t(2 + 2 * 9 + 1));
  for (auto& [name, t] : m.named_tensors())
    BOOST_CHECK_MESSAGE(t.grad().defined() && t.grad().abs().sum().item<double>() > 0, name << " gets no gradient");
}

BOOST_AUTO_TEST_CASE(options_round_trip_through_yaml) {
  LladaOptions o;
  o.config = kConfig;
  o.weights = kIndex;
  o.init_seed = 7;
  o.rope_theta = 10000.0;
  ConfigNode out = ConfigNode::make_map();
  OptionWriter w(out);
  o.fields(w);
  const std::string yaml = to_yaml(out);
  auto back = read_options<LladaOptions>(parse_config_string(yaml, "resolved.yaml"), "backbone `llada`");
  ConfigNode again = ConfigNode::make_map();
  OptionWriter w2(again);
  back.fields(w2);
  BOOST_CHECK_EQUAL(to_yaml(again), yaml);
  BOOST_CHECK_EQUAL(back.config, kConfig);
  BOOST_CHECK_EQUAL(back.weights, kIndex);
  BOOST_CHECK_EQUAL(back.init_seed, 7);
  BOOST_CHECK_EQUAL(back.rope_theta, 10000.0);
  BOOST_CHECK_EQUAL(back.d_model, 4096);
  // Explicit keys build the same model as the config.json.
  LladaOptions e;
  e.d_model = 64, e.n_layers = 2, e.n_heads = 4, e.mlp_hidden_size = 160, e.vocab_size = 256, e.mask_token_id = 230;
  e.max_sequence_length = 64, e.weights = kWeights;
  c10::InferenceMode g;
  Llada a(e), b(fixture_options());
  BOOST_CHECK(at::equal(a.named_tensors().back().second, b.named_tensors().back().second));
}

BOOST_AUTO_TEST_CASE(config_errors_name_the_file_and_key) {
  TempDir tmp;
  const auto base = nlohmann::json::parse(read_text(kConfig));
  auto write = [&](const std::string& name, const nlohmann::json& j) {
    LladaOptions o;
    o.config = tmp.file(name + ".json", j.dump());
    return o;
  };
  auto variant = [&](const char* key, const nlohmann::json& value) {
    auto j = base;
    j[key] = value;
    return write(key, j);
  };
  auto without = [&](const char* key) {
    auto j = base;
    j.erase(key);
    return write(std::string("no_") + key, j);
  };
  check_error([&] { llada_architecture(variant("block_type", "sequential")); },
              {"block_type.json", "`block_type`", "sequential", "llama"});
  check_error([&] { llada_architecture(variant("n_kv_heads", 2)); }, {"n_kv_heads", "grouped-query"});
  check_error([&] { llada_architecture(variant("weight_tying", true)); }, {"weight_tying", "true"});
  check_error([&] { llada_architecture(variant("activation_type", "swiglu")); }, {"activation_type", "silu"});
  check_error([&] { llada_architecture(variant("d_model", "64")); }, {"d_model", "not an integer"});
  check_error([&] { llada_architecture(without("mask_token_id")); },
              {"no_mask_token_id.json", "mask_token_id", "missing"});
  check_error([&] { llada_architecture(variant("mask_token_id", 300)); }, {"mask_token_id", "outside"});
  LladaOptions clash = fixture_options("");
  clash.d_model = 128;
  check_error([&] { llada_architecture(clash); }, {"`d_model` = 128", "disagrees", "config.json"});
  LladaOptions missing;
  missing.config = tmp.path + "/nowhere/config.json";
  check_error([&] { llada_architecture(missing); }, {"config", "nowhere/config.json", "not found"});
}

BOOST_AUTO_TEST_CASE(wrong_tensor_names_and_shapes_give_clear_errors) {
  c10::InferenceMode g;
  TempDir tmp;
  // A misnamed tensor in a single file.
  auto f = read_safetensors(kWeights);
  for (auto& [name, t] : f.tensors)
    if (name == "model.transformer.blocks.1.up_proj.weight") name = "model.transformer.blocks.1.upproj.weight";
  const std::string renamed = tmp.file("renamed.safetensors");
  write_safetensors(renamed, f.tensors);
  check_error([&] { Llada m(fixture_options(renamed)); },
              {"renamed.safetensors", "has no tensor `model.transformer.blocks.1.up_proj.weight`"});
  // A model of another width.
  LladaOptions wide;
  wide.d_model = 64, wide.n_layers = 2, wide.n_heads = 4, wide.mlp_hidden_size = 128, wide.vocab_size = 256;
  wide.mask_token_id = 230, wide.weights = kWeights;
  check_error([&] { Llada m(wide); }, {"model.transformer.blocks.0.", "has shape [160, 64]", "[128, 64]"});
  wide.weights = kIndex;
  check_error([&] { Llada m(wide); }, {"model-0000", "has shape [", "160", "128]"});
  // Sharded: an index naming a missing shard, or lacking a tensor.
  auto index = nlohmann::json::parse(read_text(kIndex));
  index["weight_map"]["model.transformer.ln_f.weight"] = "model-00003-of-00002.safetensors";
  const std::string dir = std::filesystem::path(kIndex).parent_path().string();
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".safetensors")
      std::filesystem::copy_file(e.path(), tmp.path + "/" + e.path().filename().string());
  const std::string bad = tmp.file("model.safetensors.index.json", index.dump());
  check_error([&] { Llada m(fixture_options(bad)); }, {"model-00003-of-00002.safetensors", "not found"});
  index["weight_map"].erase("model.transformer.ln_f.weight");
  const std::string short_index = tmp.file("short.index.json", index.dump());
  check_error([&] { Llada m(fixture_options(short_index)); },
              {"short.index.json", "has no tensor `model.transformer.ln_f.weight`"});
  // Token ids outside the vocabulary, and a too long sequence.
  Llada m(fixture_options());
  DenseOps ops;
  ops.begin_run(m.linears(), nullptr);
  CountingHooks h(ops);
  check_error([&] { m.forward(at::full({1, 4}, 256, at::kLong), at::zeros({1}), span(0), h); }, {"[0, 256)"});
  check_error([&] { m.forward(at::zeros({1, 65}, at::kLong), at::zeros({1}), span(0), h); },
              {"max_sequence_length 64"});
}

// Full width (d_model 4096, 32 heads, MLP 12288, vocabulary 126464; 2 of LLaDA-8B's 32
// layers), written by `tools/fixtures/llada.py --ref ... --full DIR` (~3 GB, not committed):
//   CACHELAB_FULL_FIXTURES=DIR build/tests/test_models --run_test=llada/full_width
BOOST_AUTO_TEST_CASE(full_width, *boost::unit_test::precondition(full_fixtures)) {
  const char* env = std::getenv("CACHELAB_FULL_FIXTURES");
  const std::string dir = env ? env : "";
  BOOST_REQUIRE_MESSAGE(!dir.empty() && std::filesystem::exists(dir + "/llada_full_data.safetensors"),
                        "set CACHELAB_FULL_FIXTURES to the folder tools/fixtures/llada.py --full wrote");
  c10::InferenceMode g;
  auto f = read_safetensors(dir + "/llada_full_data.safetensors");
  std::map<std::string, at::Tensor> d(f.tensors.begin(), f.tensors.end());
  LladaOptions o;
  o.config = dir + "/config.json";
  o.weights = dir + "/model.safetensors.index.json";
  Llada m(o);
  BOOST_TEST_MESSAGE("llada full width: " << m.num_parameters() << " parameters, vocabulary " << m.vocab_size());
  DenseOps ops;
  ops.begin_run(m.linears(), nullptr);
  CountingHooks h(ops);
  const auto start = std::chrono::steady_clock::now();
  auto logits = m.forward(d.at("ids"), at::zeros({2}), span(0), h);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double err = max_err(logits, d.at("logits")), scale = d.at("logits").abs().max().item<double>();
  BOOST_TEST_MESSAGE("llada full width vs modeling_llada.py: max abs error " << err << " (logits up to " << scale
                                                                             << "), forward of 2 x 32 tokens " << secs
                                                                             << " s");
  BOOST_CHECK_LT(err, 1e-3);
}

BOOST_AUTO_TEST_SUITE_END()
