// The bundled judge: shapes, save/load round-trip, and its accuracy on the MNIST test set.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>

#include "models/lenet.h"
#include "models/mnist.h"
#include "tests/test_util.h"

using namespace cachelab;

BOOST_AUTO_TEST_SUITE(lenet)

BOOST_AUTO_TEST_CASE(shapes_and_round_trip) {
  cachelab::testing::TempDir d;
  Judge a;
  auto x = at::rand({5, 1, 32, 32}) * 2 - 1;
  BOOST_CHECK(a.logits(x).sizes() == at::IntArrayRef({5, 10}));
  BOOST_CHECK(a.features(x).sizes() == at::IntArrayRef({5, 84}));
  a.save(d.path + "/j.safetensors");
  Judge b;
  b.load(d.path + "/j.safetensors");
  BOOST_CHECK(at::equal(a.logits(x), b.logits(x)));
  cachelab::testing::check_error([&] { b.load(d.path + "/none.safetensors"); },
                                 {"none.safetensors", "not found", "configs/train/lenet-mnist.yaml"});
}

BOOST_AUTO_TEST_CASE(bundled_judge_reaches_its_accuracy_floor) {
  const std::string weights = project_root() + "/models/weights/lenet-mnist.safetensors";
  BOOST_REQUIRE_MESSAGE(std::filesystem::exists(weights), "bundled judge missing: " << weights);
  Judge j;
  j.load(weights);
  auto test = load_idx_dataset(default_data_dir(), "mnist", "test", 32);
  const double acc = j.accuracy(test.images, test.labels);
  BOOST_TEST_MESSAGE("lenet-mnist test accuracy " << acc);
  BOOST_CHECK_GE(acc, 0.985);
}

BOOST_AUTO_TEST_SUITE_END()
