#define BOOST_TEST_MODULE cachelab_caches
#include <boost/test/unit_test.hpp>
