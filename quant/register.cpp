// Every quantizer, one line each (ops layers: they replace a backbone's linear layers).
#include "framework/registries.h"
#include "quant/w8a8.h"

namespace cachelab {

void register_quant() {
  auto& r = ops_layers();
  r.add<W8A8Ops, W8A8Options>(
      "w8a8", "W8A8 post-training quantization of linears (int8 per-channel weights, static or dynamic activations)",
      __FILE__);
}

}  // namespace cachelab
