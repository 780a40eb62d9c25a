#define BOOST_TEST_MODULE cachelab_metrics
#include <boost/test/unit_test.hpp>
