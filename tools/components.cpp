#include "tools/components.h"

#include "framework/registries.h"

namespace cachelab {

void register_models();   // models/register.cpp
void register_caches();   // caches/register.cpp
void register_metrics();  // metrics/register.cpp
void register_quant();    // quant/register.cpp

void register_components() {
  static bool added = false;
  if (!added) {
    added = true;
    add_register_function(&register_models);
    add_register_function(&register_caches);
    add_register_function(&register_metrics);
    add_register_function(&register_quant);
  }
  register_all();
}

}  // namespace cachelab
