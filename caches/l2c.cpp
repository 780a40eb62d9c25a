#include "caches/l2c.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {

const char* const kL2cTrainCommand = "cachelab train configs/train/l2c-dit-mnist.yaml";
const char* const kL2cLayoutKey = "layout";
const char* const kL2cSitesKey = "sites";
const char* const kL2cBackboneDigestKey = "backbone_digest";

namespace {

constexpr const char* kLogitsName = "logits";
constexpr const char* kFormat = "cachelab l2c router";
constexpr const char* kAttnMlp = "attn_mlp";
constexpr const char* kBranch = "branch";
// What to do about a router for another backbone.
constexpr const char* kTrainHint =
    "train one for this backbone (a recipe under configs/train/, e.g. configs/train/l2c-dit-mnist.yaml or "
    "configs/train/l2c-unet-mnist.yaml, with this backbone's `base:`)";

void check_shape(const at::Tensor& logits, const std::string& source) {
  CL_CHECK(logits.defined() && logits.dim() == 3 && logits.size(0) >= 1 && logits.size(1) >= 1 &&
               (logits.size(2) == 1 || logits.size(2) == 2),
           "l2c: router " << source << " must hold logits of shape [steps, depth, 2] or [steps, levels, 1]");
}

std::string describe_layout(const std::string& name) {
  if (name == kAttnMlp) return "the attn and mlp sub-layers of a DiT's main stream (layout attn_mlp)";
  if (name == kBranch) return "the skip branches of a U-Net (layout branch)";
  return "layout `" + name + "`";
}

}  // namespace

std::string L2cLayout::site_list() const {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? "," : "") + names[i];
  return out;
}

L2cLayout l2c_layout(const std::vector<Site>& sites) {
  const bool branches = std::any_of(sites.begin(), sites.end(),
                                    [](const Site& s) { return s.kind == SiteKind::Branch && s.block >= 0; });
  L2cLayout l;
  l.name = branches ? kBranch : kAttnMlp;
  l.row_unit = branches ? "branch levels" : "blocks";
  l.kinds = branches ? 1 : 2;
  l.slot.assign(sites.size(), -1);
  for (size_t i = 0; i < sites.size(); ++i) {
    const Site& s = sites[i];
    int kind = -1;
    if (s.block < 0) continue;
    if (branches) kind = s.kind == SiteKind::Branch ? 0 : -1;
    else if (s.stream == 0) kind = s.kind == SiteKind::Attn ? 0 : s.kind == SiteKind::Mlp ? 1 : -1;
    if (kind < 0) continue;
    l.slot[i] = s.block * l.kinds + kind;
    l.rows = std::max(l.rows, s.block + 1);
    ++l.routed;
  }
  l.names.assign(size_t(l.rows * l.kinds), std::string());
  for (size_t i = 0; i < sites.size(); ++i)
    if (l.slot[i] >= 0) {
      std::string& n = l.names[size_t(l.slot[i])];
      n += (n.empty() ? "" : "+") + sites[i].name;
    }
  for (auto& n : l.names)
    if (n.empty()) n = "-";
  return l;
}

void save_l2c_router(const std::string& path, const at::Tensor& logits,
                     const std::map<std::string, std::string>& metadata) {
  check_shape(logits, "`" + path + "`");
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = kFormat;
  meta["steps"] = std::to_string(logits.size(0));
  meta["depth"] = std::to_string(logits.size(1));  // rows: blocks or branch levels
  meta["kinds"] = std::to_string(logits.size(2));
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  write_safetensors(path, {{kLogitsName, logits.detach().to(at::kCPU, at::kFloat).contiguous()}}, meta);
}

at::Tensor load_l2c_router(const std::string& path, std::map<std::string, std::string>* metadata) {
  CL_CHECK(std::filesystem::exists(path),
           "l2c: router file `" << path << "` not found; make it with `" << kL2cTrainCommand
                                << "` (or point cache.router at another router)");
  SafetensorsFile f = read_safetensors(path);
  for (auto& [name, t] : f.tensors)
    if (name == kLogitsName) {
      check_shape(t, "`" + path + "`");
      if (metadata) *metadata = f.metadata;
      return t.to(at::kFloat).contiguous();
    }
  CL_FAIL("l2c: `" << path << "` holds no tensor `" << kLogitsName << "`: not a router file (make one with `"
                   << kL2cTrainCommand << "`)");
}

L2cRouter::L2cRouter(const L2cOptions& o) : o_(o), from_file_(true) {
  // A router trained on demand may not be made yet (validate, the preflight): read when bound.
  if (o_.train.empty() || std::filesystem::exists(resolve_path(o_.router)))
    logits_ = load_l2c_router(resolve_path(o_.router), &metadata_);
}

L2cRouter::L2cRouter(at::Tensor logits, const L2cOptions& o) : o_(o), logits_(std::move(logits)) {
  check_shape(logits_, "`" + o_.router + "`");
}

void L2cRouter::check_file(const RunContext& ctx) const {
  // Files written before layouts were recorded are DiT routers.
  const auto layout = metadata_.count(kL2cLayoutKey) ? metadata_.at(kL2cLayoutKey) : std::string(kAttnMlp);
  CL_CHECK(layout == layout_.name, "l2c: router `" << o_.router << "` routes " << describe_layout(layout)
                                                   << ", but this backbone is routed at "
                                                   << describe_layout(layout_.name) << " ("
                                                   << layout_.site_list() << "); " << kTrainHint);
  if (auto it = metadata_.find(kL2cSitesKey); it != metadata_.end())
    CL_CHECK(it->second == layout_.site_list(), "l2c: router `" << o_.router << "` routes the sites " << it->second
                                                                << " but this backbone's are "
                                                                << layout_.site_list() << "; " << kTrainHint);
  if (auto it = metadata_.find(kL2cBackboneDigestKey); it != metadata_.end())
    CL_CHECK(it->second.empty() || ctx.backbone_digest.empty() || it->second == ctx.backbone_digest,
             "l2c: router `" << o_.router << "` was trained on backbone weights with digest " << it->second
                             << " but this backbone's weights have digest " << ctx.backbone_digest << "; "
                             << kTrainHint);
}

void L2cRouter::begin_run(RunContext& ctx) {
  const auto& sites = *ctx.sites;
  layout_ = l2c_layout(sites);
  cache_.assign(sites.size(), at::Tensor());
  CL_CHECK(layout_.routed > 0,
           "l2c: this backbone has no site a router can route (no branch site, no attn or mlp site in its main "
           "stream)");
  if (from_file_ && !logits_.defined()) logits_ = load_l2c_router(resolve_path(o_.router), &metadata_);
  if (from_file_) check_file(ctx);
  CL_CHECK(kinds() == layout_.kinds, "l2c: router `" << o_.router << "` has " << kinds()
                                                     << " logits per row but " << describe_layout(layout_.name)
                                                     << " needs " << layout_.kinds << "; " << kTrainHint);
  CL_CHECK(layout_.rows == rows(), "l2c: router `" << o_.router << "` is for " << rows() << " " << layout_.row_unit
                                                  << " but the backbone has " << layout_.rows
                                                  << "; train a router for this backbone (`" << kL2cTrainCommand
                                                  << "` with its backbone)");
  CL_CHECK(ctx.steps == steps(), "l2c: router `" << o_.router << "` was trained for " << steps()
                                                << " sampling steps but this run takes " << ctx.steps
                                                << "; train one for this sampler (`" << kL2cTrainCommand
                                                << " sampler.steps=" << ctx.steps << " train.output=...`)");
  auto s = logits_.detach().to(at::kCPU, at::kFloat).sigmoid().contiguous();
  scores_.assign(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
  step_ = 0;
}

at::Tensor L2cRouter::row_scores(int slot, int64_t rows) const {
  const int64_t per_step = logits_.size(1) * logits_.size(2);
  at::Tensor idx;
  if (row_steps_.defined()) {
    const int64_t b = row_steps_.size(0);
    CL_CHECK(b > 0 && rows % b == 0, "l2c: a model batch of " << rows << " rows cannot be tiled from " << b
                                                              << " per-sample steps");
    idx = (row_steps_.to(at::kLong) * per_step + slot).repeat({rows / b});
  } else {
    idx = at::full({rows}, int64_t(step_) * per_step + slot, at::kLong);
  }
  return logits_.reshape({-1}).index_select(0, idx.to(logits_.device())).sigmoid();
}

Tensors L2cRouter::at(SiteCall& call, const Next& next) {
  const int slot = layout_.slot[size_t(call.site)];
  // A row subset asked by an outer layer is computed as asked and not cached: the cache
  // holds whole outputs.
  if (slot < 0 || call.rows.defined()) return next(call);
  at::Tensor& cached = cache_[size_t(call.site)];
  switch (mode_) {
    case Mode::Fill: {
      Tensors out = next(call);
      cached = out[0].detach();
      return out;
    }
    case Mode::Blend:
    case Mode::Unroll: {
      CL_CHECK(cached.defined(), "l2c: blend at site `" << call.info->name
                                                        << "` with nothing cached: run a fill pass first");
      Tensors out = next(call);
      const at::Tensor fresh = out[0];
      std::vector<int64_t> shape(size_t(fresh.dim()), 1);
      shape[0] = fresh.size(0);
      const auto s = row_scores(slot, fresh.size(0)).view(shape).to(fresh.scalar_type());
      const auto computed = s.detach() > o_.threshold;  // the inference decision, per row
      const auto w = hard_ ? computed.to(s.scalar_type()) : s;
      out[0] = w * fresh + (1 - w) * cached;
      call.log->decision = Decision::Blend;
      call.log->signal = s.detach().mean().item<double>();
      if (mode_ == Mode::Unroll) cached = at::where(computed, fresh.detach(), cached);
      return out;
    }
    case Mode::Infer: break;
  }
  CL_CHECK(step_ >= 0 && step_ < steps(), "l2c: step " << step_ << " is outside the router's " << steps() << " steps");
  const bool full_step = step_ == 0 || (o_.full_every > 0 && step_ % o_.full_every == 0);
  bool compute = full_step || !cached.defined();
  if (!full_step) {
    const double s = scores_[size_t(step_) * size_t(rows() * kinds()) + size_t(slot)];
    call.log->signal = s;
    compute = compute || s > o_.threshold;
  }
  if (!compute) {
    call.log->decision = Decision::Reuse;
    return {cached};
  }
  Tensors out = next(call);
  cached = out[0];
  return out;
}

}  // namespace cachelab
