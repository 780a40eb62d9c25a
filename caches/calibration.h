// The digest a calibration file carries (framework/calibration_file.h: the file format and
// its reader and writer): which backbone the file was fitted on.
#pragma once
#include <string>

#include "framework/calibration_file.h"
#include "framework/layer.h"

namespace cachelab {

// 16 hex digits identifying a backbone: a 64-bit FNV-1a hash of its site table (names,
// kinds, blocks) and of every linear layer's weights and biases (as float32 on the CPU),
// so it changes with the architecture or the weights, not with the device.
std::string backbone_digest(const RunContext& ctx);

}  // namespace cachelab
