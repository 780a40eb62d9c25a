// Registry census (no component silently dropped) and config round-trips of every
// registered component: resolve -> YAML -> parse -> resolve gives the same options.
#include <boost/test/unit_test.hpp>
#include <set>

#include "framework/config.h"
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
  const std::set<std::string> bb = {"dit"}, sm = {"ddim", "ddpm"}, ca = {"none", "fora", "fbcache", "l2c"},
                              me = {"mse", "psnr", "ssim", "fid", "accuracy"};
  for (auto& n : bb) BOOST_CHECK_MESSAGE(names(backbones()).count(n), "backbone " << n);
  for (auto& n : sm) BOOST_CHECK_MESSAGE(names(samplers()).count(n), "sampler " << n);
  for (auto& n : ca) BOOST_CHECK_MESSAGE(names(caches()).count(n), "cache " << n);
  for (auto& n : me) BOOST_CHECK_MESSAGE(names(metrics()).count(n), "metric " << n);
  for (auto* e : {&caches().entries().at("fora"), &caches().entries().at("fbcache")})
    BOOST_CHECK(!e->description.empty() && !e->keys.empty());
}

template <class Reg>
void round_trip_all(const Reg& reg) {
  for (auto& [name, entry] : reg.entries()) {
    ConfigNode node = parse_config_string("type: " + name + "\n", "test.yaml");
    ConfigNode first = reg.resolve(node);
    const std::string yaml = to_yaml(first);
    ConfigNode again = reg.resolve(parse_config_string(yaml, "roundtrip.yaml"));
    BOOST_CHECK_MESSAGE(to_yaml(again) == yaml, reg.kind() << " " << name << ":\n" << yaml << "\nvs\n" << to_yaml(again));
    // Every documented key is written out with its default.
    for (auto& k : entry.keys) BOOST_CHECK_MESSAGE(first.find(k.key), reg.kind() << " " << name << " lacks " << k.key);
  }
}

BOOST_AUTO_TEST_CASE(config_round_trip_of_every_component) {
  register_components();
  round_trip_all(backbones());
  round_trip_all(samplers());
  round_trip_all(caches());
  round_trip_all(metrics());
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
