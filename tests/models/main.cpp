#define BOOST_TEST_MODULE cachelab_models
#include <boost/test/unit_test.hpp>
