// Every quantizer, one line each (ops layers: they replace a backbone's linear layers), and the
// site layers that steer them (sixbit).
#include "framework/registries.h"
#include "quant/ptq.h"
#include "quant/sixbit.h"
#include "quant/w8a8.h"

namespace cachelab {

void register_quant() {
  auto& r = ops_layers();
  r.add<W8A8Ops, W8A8Options>(
      "w8a8", "W8A8 post-training quantization of linears (int8 per-channel weights, static or dynamic activations)",
      __FILE__);
  r.add<PtqOps, PtqOptions>(
      "ptq", "post-training fake quantization of the linears: any bit width, granularity and calibrator", __FILE__);
  caches().add<SixBitPolicy, SixBitOptions>(
      "sixbit", "6Bit-Diffusion: per block and step, low or high bits from the block's input-output difference", __FILE__);
}

}  // namespace cachelab
