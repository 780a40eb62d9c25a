// Every extension point of cachelab, one line each. A component registers itself with
// one line in its folder's register function (models/register.cpp, caches/register.cpp,
// metrics/register.cpp); register_all() calls them, so nothing depends on static
// initialisation or on the linker keeping an object file.
#pragma once
#include "framework/registry.h"

namespace cachelab {

class Backbone;
class Sampler;
class CachePolicy;
class Metric;

Registry<Backbone>& backbones();      // denoisers: dit, ...
Registry<Sampler>& samplers();        // ddim, ddpm, ...
Registry<CachePolicy>& caches();      // none, fora, fbcache, ...
Registry<Metric>& metrics();          // psnr, ssim, fid, accuracy, ...
// Slots for later issues: quantizers(), correctors(), predictors().

void register_models();   // models/register.cpp
void register_caches();   // caches/register.cpp
void register_metrics();  // metrics/register.cpp
void register_all();      // idempotent
}  // namespace cachelab
