#define BOOST_TEST_MODULE cachelab_framework
#include <boost/test/unit_test.hpp>
