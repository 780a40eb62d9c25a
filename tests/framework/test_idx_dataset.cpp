// The IDX reader on the fetched MNIST files, and the error when a data set is missing.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>

#include "framework/idx_dataset.h"
#include "tests/test_util.h"

using namespace cachelab;

BOOST_AUTO_TEST_SUITE(mnist)

BOOST_AUTO_TEST_CASE(test_split_is_padded_and_scaled) {
  auto ds = load_idx_dataset(default_data_dir(), "mnist", "test", 32);
  BOOST_CHECK(ds.images.sizes() == at::IntArrayRef({10000, 1, 32, 32}));
  BOOST_CHECK_EQUAL(ds.labels.size(0), 10000);
  BOOST_CHECK_EQUAL(ds.images.min().item<float>(), -1.0f);
  BOOST_CHECK_EQUAL(ds.images.max().item<float>(), 1.0f);
  // The 2-pixel border is background; the label histogram covers all ten classes.
  BOOST_CHECK_EQUAL(ds.images.narrow(3, 0, 2).max().item<float>(), -1.0f);
  BOOST_CHECK_EQUAL(at::bincount(ds.labels).size(0), 10);
  BOOST_CHECK_EQUAL(ds.labels[0].item<int64_t>(), 7);  // the well-known first test digit
}

BOOST_AUTO_TEST_CASE(missing_dataset_says_how_to_fetch_it) {
  cachelab::testing::TempDir d;
  cachelab::testing::check_error([&] { load_idx_dataset(d.path, "fashion-mnist", "train"); },
                                 {d.path, "fashion-mnist", "not found", "tools/fetch_data.sh"});
  cachelab::testing::check_error([&] { load_idx_dataset(d.path, "cifar", "train"); }, {"unknown dataset", "mnist"});
}

BOOST_AUTO_TEST_SUITE_END()
