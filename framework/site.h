// Sites, taps and site layers: the core of cachelab.
//
// A backbone names each computation `outputs = f(inputs)` it performs (its *sites*:
// model, body, blocks.i, blocks.i.attn, blocks.i.mlp, layers.i.kv ...) and routes it
// through Hooks::at. The runner stacks *site layers* (recorder, cache policy, corrector
// ...) around every site, the way middleware wraps a handler: each layer receives the
// call and `next`, and may call `next` zero times (reuse, predict), once, on a subset of
// rows (partial compute), or twice (blend, calibrate). A *tap* lets a model expose an
// internal tensor (block 0's modulated input) to the layers without making it a site.
// Models know nothing about caches; layers select sites by their structural tags.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace cachelab {

using Tensors = std::vector<at::Tensor>;

// What a site is, structurally: policies select by these, never by parsing names.
enum class SiteKind : uint8_t { Model, Body, Block, Attn, Mlp, Branch, Kv, Other };
const char* site_kind_name(SiteKind k);
SiteKind site_kind_from_name(const std::string& name);  // throws on an unknown kind

// One row of a backbone's site table. Sites nest: `parent` is the index of the enclosing
// site (-1 for the root). FLOPs are analytic (multiply-add = 2) for one sample of the
// batch, the site's own work *excluding* its child sites, so that summing over the sites
// actually computed gives the FLOPs actually spent. When a layer computes only some rows
// (tokens) of a site, the site costs fixed + (flops - fixed) x fraction of rows.
struct Site {
  std::string name;
  int parent = -1;
  double flops_per_sample = 0.0;
  SiteKind kind = SiteKind::Other;
  int block = -1;            // block (layer) index for block-level and deeper sites, else -1
  int stream = 0;            // 0 = image / main stream; 1 = second stream (text, MMDiT)
  bool rows = false;         // accepts a row subset (tokens along dim 1 of inputs[0])
  double fixed_flops_per_sample = 0.0;  // part of flops_per_sample paid whatever the rows
};

// The main-stream (stream 0) block sites: block_of[i] is site i's block index when it is a
// kind-block site of stream 0, else -1. Returns the depth (the highest such index + 1).
int main_stream_blocks(const std::vector<Site>& sites, std::vector<int>& block_of);

// Per token (dim 1 of x [B, N, D]): the relative L1 change of its input since `before`, over
// the batch and features ([N] float32). Token-rate caches recompute the tokens that changed most.
at::Tensor token_change(const at::Tensor& x, const at::Tensor& before);

// An observe-only tensor a model exposes (e.g. `blocks.0.modulated_input`). Layers find taps
// by kind, never by name: ModulatedInput is the first block's input after the timestep's
// modulation (TeaCache's signal).
enum class TapKind : uint8_t { Other, ModulatedInput };

// What attention a sequence backbone has (Backbone::sequence_kind, RunContext::sequence), so
// that a K/V cache refuses a backbone it cannot serve when it binds (before any run starts):
//   None           not a sequence model (images)
//   Bidirectional  a masked-diffusion LM: every position sees every other (tiny_mdlm, llada)
//   BlockCausal    a block-diffusion LM: a position sees its own and earlier blocks (llada's block_size)
//   Topological    a masked LM with WeDLM's causal attention over the topological order (observed
//                  positions left to right, then masked ones): llada's topological
//   Tidar          TiDAR's hybrid: tokens causal (an AR model), blocks of MASK bidirectional inside,
//                  each seeing the tokens before its first position (llada's tidar)
//   Causal         autoregressive video: a frame sees its own chunk and earlier ones (tiny_video)
enum class SequenceKind : uint8_t { None, Bidirectional, BlockCausal, Topological, Tidar, Causal };
struct Tap {
  std::string name;
  int block = -1;
  TapKind kind = TapKind::Other;
};

// Where the loop is. Image pipelines have one outer iteration; a diffusion LM iterates
// over blocks of tokens (outer) x denoising steps (inner); AR video over chunks x steps.
struct StepIndex {
  int index = 0;         // flat 0-based step of the whole run (the row of /steps)
  int count = 0;         // flat number of steps
  int outer = 0;         // block / chunk index (0 for images)
  int inner = 0;         // denoising step within the outer iteration
  int inner_count = 0;   // denoising steps per outer iteration
  int64_t timestep = 0;  // model timestep of this step
};

// Stored as uint8 in the run file (/sites/decision).
enum class Decision : uint8_t {
  Compute = 0,  // the site ran on every row
  Reuse = 1,    // a cached value stands in
  Predict = 2,  // a forecast from the site's history stands in
  Skipped = 3,  // not visited this step: an enclosing site was not computed
  Partial = 4,  // the site ran on a subset of rows; cached rows fill the rest
  Blend = 5,    // computed and stand-in values mixed (a router in training)
};
const char* decision_name(Decision d);

constexpr double kNoSignal = std::numeric_limits<double>::quiet_NaN();

// What the layers did at one call, filled in as the call passes through them.
struct SiteLog {
  Decision decision = Decision::Reuse;  // set by the layer that answered without computing
  double signal = kNoSignal;            // the quantity a decision was based on
  double computed_fraction = 0.0;       // rows computed / rows (sum over calls of next)
  int site = -1;
  std::vector<std::vector<double>>* extra = nullptr;  // this step's [extra][site] values, or null
  // Logs a value of a declared extra (RunContext::declare_site_extra) for this call's site.
  void set_extra(int id, double value) {
    if (extra) (*extra)[size_t(id)][size_t(site)] = value;
  }
};

// One call of a site, as every layer sees it.
struct SiteCall {
  int site = -1;
  const Site* info = nullptr;
  const StepIndex* step = nullptr;
  Tensors inputs;        // inputs[0] is the residual stream [B, N, D] (or the image)
  at::Tensor rows;       // optional int64 [R] row (token) indices along dim 1; undefined = all
  SiteLog* log = nullptr;
  // FLOPs of one sample over all rows of inputs[0] when the model passed them for this call
  // (sequence models whose cost depends on run-time shapes); NaN = the site table's figure.
  double flops_per_sample = std::numeric_limits<double>::quiet_NaN();
};

// The rest of the stack below a layer. Calling it runs the inner layers and finally the
// site's computation. With call.rows set, outputs hold only those rows.
using Next = std::function<Tensors(const SiteCall&)>;

// A model's computation of one site: inputs (and rows) -> outputs.
using SiteFn = std::function<Tensors(const SiteCall&)>;
using SiteFn1 = std::function<at::Tensor(const at::Tensor&)>;
using TapFn = std::function<at::Tensor()>;

class Ops;
class GuidanceCache;  // framework/layer.h

// What a backbone's forward sees: sites, taps and the ops (linear layers, attention).
class Hooks {
 public:
  virtual ~Hooks() = default;
  virtual Tensors at(int site, Tensors inputs, const SiteFn& compute) = 0;
  // A site call whose cost depends on run-time shapes (sequence length, rows computed, keys
  // a K/V cache supplies): `flops_per_sample` stands for the site table's figure in this
  // call, for one sample over all rows of inputs[0] (the site's own work, children excluded).
  // Hooks that count nothing ignore it.
  virtual Tensors at(int site, Tensors inputs, const SiteFn& compute, double flops_per_sample) {
    (void)flops_per_sample;
    return at(site, std::move(inputs), compute);
  }
  // One tensor in, one out, no row subsets.
  at::Tensor at(int site, const at::Tensor& input, const SiteFn1& compute);
  // Whether any layer listens to tap `tap` (so the model computes it only then).
  virtual bool wants_tap(int tap) const { (void)tap; return false; }
  virtual void tap(int tap, const at::Tensor& value) { (void)tap, (void)value; }
  void tap(int t, const TapFn& produce) {
    if (wants_tap(t)) tap(t, produce());
  }
  virtual Ops& ops() = 0;
  // The run's reuse of guidance's unconditional branch (framework/layer.h), if a layer offers one.
  virtual GuidanceCache* guidance_cache() { return nullptr; }
};

struct LinearRef;

// Computes every site with dense ops over a backbone's linear table (`backbone.linears()`):
// what training and bare sampling use.
class PassThroughHooks final : public Hooks {
 public:
  explicit PassThroughHooks(const std::vector<LinearRef>& linears);
  ~PassThroughHooks() override;
  Tensors at(int, Tensors inputs, const SiteFn& compute) override;
  Ops& ops() override { return *ops_; }

 private:
  std::unique_ptr<Ops> ops_;
};

// Index of a site by name, or -1.
int find_site(const std::vector<Site>& sites, const std::string& name);
// Index of the first main-stream (stream 0) site of `kind` (the model, the body), or -1.
int find_site(const std::vector<Site>& sites, SiteKind kind);

}  // namespace cachelab
