#define BOOST_TEST_MODULE cachelab_quant
#include <boost/test/unit_test.hpp>

#include "tools/components.h"

// Every suite sees the registries filled, as the cachelab binary does.
struct RegisterComponents {
  RegisterComponents() { cachelab::register_components(); }
};
BOOST_GLOBAL_FIXTURE(RegisterComponents);
