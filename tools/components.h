// The component folders linked into every cachelab binary. Adding a folder (quant/ ...)
// means one line in components.cpp, no framework file.
#pragma once

namespace cachelab {

// Registers every component folder, then builds the registries (idempotent).
void register_components();

}  // namespace cachelab
