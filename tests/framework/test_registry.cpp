// Registry census (no component silently dropped) and config round-trips of every
// registered component: resolve -> YAML -> parse -> resolve gives the same options.
#include <boost/test/unit_test.hpp>
#include <map>
#include <set>

#include "framework/config.h"
#include "framework/lm_decoder.h"
#include "framework/registries.h"
#include "tools/components.h"

using namespace cachelab;

BOOST_AUTO_TEST_SUITE(registry)

BOOST_AUTO_TEST_CASE(census_every_expected_component_is_registered) {
  register_components();
  auto names = [](const auto& reg) {
    auto v = reg.names();
    return std::set<std::string>(v.begin(), v.end());
  };
  const std::set<std::string> bb = {"dit", "tiny_mdlm", "tiny_video", "unet", "sd_unet", "pixart", "llada"},
                              sm = {"ddim", "ddpm", "euler_flow", "heun_flow", "adm", "plms", "dpm_solver"},
                              ca = {"none", "fora", "fbcache", "taylorseer", "teacache", "toca", "dec", "l2c",
                                    "dbcache", "delta_dit", "magcache", "zeus", "cg_taylor", "scm", "threshold_search",
                                    "schedule", "foca", "pab", "ras", "delta_cache", "deepcache", "sixbit", "vc", "residual_linear",
                                    "interval_adjust", "easycache", "ucache", "spectrum", "layer_skip"},
                              me = {"mse", "psnr", "ssim", "fid", "accuracy", "token_match", "sample_quality", "exact_match"},
                              pi = {"image", "mdlm", "video"}, gu = {"cfg"}, op = {"prefix_kv", "rolling_kv", "dual_kv", "dkv_cache", "window_diffusion", "d2cache", "w8a8", "ptq",
                                    "forcing_kv", "temp_cache", "video_mla"},
                              ld = {"low_confidence", "random", "threshold", "factor", "sliding_window", "learn2pd"};
  for (auto& n : bb) BOOST_CHECK_MESSAGE(names(backbones()).count(n), "backbone " << n);
  for (auto& n : sm) BOOST_CHECK_MESSAGE(names(samplers()).count(n), "sampler " << n);
  for (auto& n : pi) BOOST_CHECK_MESSAGE(names(pipelines()).count(n), "pipeline " << n);
  for (auto& n : gu) BOOST_CHECK_MESSAGE(names(guidances()).count(n), "guidance " << n);
  for (auto& n : op) BOOST_CHECK_MESSAGE(names(ops_layers()).count(n), "ops " << n);
  BOOST_CHECK_MESSAGE(names(evaluators()).count("lenet"), "judge lenet");
  BOOST_CHECK_MESSAGE(names(evaluators()).count("inception"), "judge inception");
  BOOST_CHECK_MESSAGE(names(decoders()).count("sd_vae"), "decoder sd_vae");
  for (auto& n : ld) BOOST_CHECK_MESSAGE(names(lm_decoders()).count(n), "lm_decoder " << n);
  for (auto& n : {"dp", "uniform", "profiled", "bac", "diffsparse"})
    BOOST_CHECK_MESSAGE(names(schedulers()).count(n), "scheduler " << n);
  for (auto& n : {"l2c", "harmonica"}) BOOST_CHECK_MESSAGE(names(router_trainers()).count(n), "router trainer " << n);
  for (auto& n : ca) BOOST_CHECK_MESSAGE(names(caches()).count(n), "cache " << n);
  for (auto& n : me) BOOST_CHECK_MESSAGE(names(metrics()).count(n), "metric " << n);
  for (auto& n : op) BOOST_CHECK_MESSAGE(names(ops_layers()).count(n), "ops " << n);
  for (auto* e : {&caches().entries().at("fora"), &caches().entries().at("fbcache")})
    BOOST_CHECK(!e->description.empty() && !e->keys.empty());
}

// Components that need keys (a nested policy, a file) round-trip from these examples.
const std::map<std::string, std::string> kExamples = {
    {"dec", "type: dec\ninner: {type: fora, interval: 2}\ntable: results/calib/t.safetensors\n"},
    {"residual_linear", "type: residual_linear\ninner: {type: fora, interval: 2}\ntable: results/calib/r.safetensors\n"},
    {"vc", "type: vc\ninner: {type: fora, interval: 2}\ntable: results/calib/v.safetensors\n"},
    {"interval_adjust", "type: interval_adjust\ninner: {type: fora, interval: 2}\ntable: results/calib/i.safetensors\n"},
    {"schedule", "type: schedule\ncompute: [1, 0, 1]\n"},
    {"dp", "type: dp\ncomputes: 17\n"}, {"uniform", "type: uniform\ncomputes: 17\n"},
    {"profiled", "type: profiled\ncomputes: 17\n"}, {"bac", "type: bac\ncomputes: 17\n"},
    {"diffsparse", "type: diffsparse\ncomputes: 17\n"},
    {"inception", "type: inception\nweights: checkpoints/pt_inception.safetensors\n"},
    {"sd_vae", "type: sd_vae\nweights: checkpoints/sd-vae-ft-ema.safetensors\n"},
    {"magcache", "type: magcache\ncalibration: results/calib/m.txt\n"},
    {"learn2pd", "type: learn2pd\nfilter: models/weights/learn2pd-llada-tasks.safetensors\n"},
    {"cache l2c", "type: l2c\ntrain: {type: harmonica, iterations: 3}\n"},  // (keyed by kind: a trainer is `l2c` too)
    {"cache layer_skip", "type: layer_skip\nlayers: [1]\nparts: [attn, mlp]\n"},
    {"scm", "type: scm\npreset: fast\ninner: {type: fbcache, threshold: 0.2}\n"},
    {"forecast", "type: forecast\ninner: {type: dbcache}\nforecaster: foca\n"},
    {"threshold_search",
     "type: threshold_search\ninner: {type: dbcache}\ntarget: psnr\nvalue: 30\nfile: results/calib/s.txt\n"},
};

template <class Reg>
void round_trip_all(const Reg& reg) {
  for (auto& [name, entry] : reg.entries()) {
    auto ex = kExamples.find(reg.kind() + " " + name);
    if (ex == kExamples.end()) ex = kExamples.find(name);
    ConfigNode node = parse_config_string(ex != kExamples.end() ? ex->second : "type: " + name + "\n", "test.yaml");
    ConfigNode first = reg.resolve(node);
    const std::string yaml = to_yaml(first);
    ConfigNode again = reg.resolve(parse_config_string(yaml, "roundtrip.yaml"));
    BOOST_CHECK_MESSAGE(to_yaml(again) == yaml, reg.kind() << " " << name << ":\n" << yaml << "\nvs\n" << to_yaml(again));
    // Every documented key is written out with its default.
    // (A key added later is left out at its unused value: the examples set l2c's and layer_skip's.)
    for (auto& k : entry.keys)
      BOOST_CHECK_MESSAGE(k.added_later || first.find(k.key), reg.kind() << " " << name << " lacks " << k.key);
  }
}

BOOST_AUTO_TEST_CASE(config_round_trip_of_every_component) {
  register_components();
  round_trip_all(backbones());
  round_trip_all(samplers());
  round_trip_all(pipelines());
  round_trip_all(guidances());
  round_trip_all(caches());
  round_trip_all(ops_layers());
  round_trip_all(metrics());
  round_trip_all(evaluators());
  round_trip_all(decoders());
  round_trip_all(lm_decoders());
  round_trip_all(schedulers());
  round_trip_all(router_trainers());
}

BOOST_AUTO_TEST_CASE(unknown_type_lists_the_registered_names_with_a_suggestion) {
  register_components();
  ConfigNode node = parse_config_string("type: forra\ninterval: 2\n", "exp.yaml");
  try {
    caches().resolve(node);
    BOOST_ERROR("expected an error");
  } catch (const Error& e) {
    const std::string m = e.what();
    BOOST_CHECK_MESSAGE(m.find("exp.yaml:1") != std::string::npos, m);
    BOOST_CHECK_MESSAGE(m.find("did you mean `fora`") != std::string::npos, m);
    BOOST_CHECK_MESSAGE(m.find("fbcache") != std::string::npos, m);
  }
}

BOOST_AUTO_TEST_SUITE_END()
