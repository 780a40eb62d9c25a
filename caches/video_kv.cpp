#include "caches/video_kv.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "caches/kv_cache.h"
#include "framework/error.h"

namespace cachelab {
namespace {

// Indices as int64 on `device` (the store's: index_select wants them there).
at::Tensor index_tensor(const std::vector<int64_t>& idx, at::Device device = at::kCPU) {
  return at::tensor(idx, at::kLong).to(device);
}

bool contiguous_from_zero(const std::vector<int64_t>& idx) {
  for (size_t i = 0; i < idx.size(); ++i)
    if (idx[i] != int64_t(i)) return false;
  return true;
}

// Rows `idx` of t [n, ...] (a view where they are the first rows).
at::Tensor rows_of(const at::Tensor& t, const std::vector<int64_t>& idx) {
  if (contiguous_from_zero(idx)) return t.narrow(0, 0, int64_t(idx.size()));
  return t.index_select(0, index_tensor(idx, t.device()));
}

// Rows `idx` of a cell's keys (kb) or values (vb) store, reconstructed from latents where it holds them.
at::Tensor full_rows(const at::Tensor& t, const at::Tensor& basis, const std::vector<int64_t>& idx) {
  auto r = rows_of(t, idx);
  return basis.defined() ? at::matmul(r, basis.t()) : r;
}

}  // namespace

// ---- HeadKvCache

void HeadKvCache::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  require_sequence(name_, ctx, {SequenceKind::Causal},
                   "causal (autoregressive video) models; for a masked LM use prefix_kv, dual_kv or block_kv");
  Ops::begin_run(linears, ctx);
  ctx_ = ctx;
  KvLogging log = bind_kv_logging(name_, ctx);
  attn_site_ = log.attn_site;
  hit_extra_ = log.hit_extra;
  bytes_extra_ = declare_kv_bytes(ctx);
  layers_.assign(attn_site_.size(), Layer());
  heads_ = batch_ = chunk_frames_ = tokens_per_frame_ = 0;
  context_ = 0;
}

void HeadKvCache::begin_step(const StepIndex& step) {
  Ops::begin_step(step);
  for (auto& l : layers_) l.served = l.seen = 0;
}

void HeadKvCache::prune_all(int64_t a) {
  for (size_t i = 0; i < layers_.size(); ++i)
    for (size_t c = 0; c < layers_[i].cells.size(); ++c)
      prune(int(i), heads_ > 0 ? int64_t(c) % heads_ : 0, layers_[i].cells[c], a);
}

void HeadKvCache::end_step() {
  // Every later query starts at a frame >= the context (the next forward computes from there).
  prune_all(context_);
  if (ctx_)
    for (size_t i = 0; i < layers_.size() && i < attn_site_.size(); ++i) {
      if (attn_site_[i] < 0) continue;
      if (hit_extra_ >= 0 && layers_[i].seen > 0)
        ctx_->set_site_extra(hit_extra_, attn_site_[i], layers_[i].served / layers_[i].seen);
      if (bytes_extra_ >= 0) ctx_->set_site_extra(bytes_extra_, attn_site_[i], bytes(int(i)));
    }
  Ops::end_step();
}

double HeadKvCache::bytes(int layer) const {
  if (layer < 0 || size_t(layer) >= layers_.size()) return 0.0;
  double total = 0;
  for (const Cell& c : layers_[size_t(layer)].cells)
    if (c.k.defined()) {
      total += double((c.k.numel() + c.v.numel()) * c.k.element_size());
      if (c.kb.defined()) total += double((c.kb.numel() + c.vb.numel()) * c.kb.element_size());
    }
  return total;
}

int64_t HeadKvCache::tokens(int layer, int64_t b, int64_t h) const {
  if (layer < 0 || size_t(layer) >= layers_.size()) return 0;
  const auto& cells = layers_[size_t(layer)].cells;
  const size_t i = size_t(b * heads_ + h);
  return i < cells.size() ? int64_t(cells[i].frame.size()) : 0;
}

std::vector<int64_t> HeadKvCache::stored_frames(int layer, int64_t b, int64_t h) const {
  std::vector<int64_t> out;
  if (layer < 0 || size_t(layer) >= layers_.size()) return out;
  const auto& cells = layers_[size_t(layer)].cells;
  const size_t i = size_t(b * heads_ + h);
  if (i < cells.size())
    for (int64_t f : cells[i].frame)
      if (out.empty() || out.back() != f) out.push_back(f);
  return out;
}

SeqPlan HeadKvCache::seq_begin(const SeqForward& f) {
  CL_CHECK(f.kind == SequenceKind::Causal, name_ << ": serves causal (autoregressive video) models; for a masked LM use prefix_kv, dual_kv "
                              "or dkv_cache");
  context_ = f.context;
  int64_t start = layers_.empty() ? 0 : std::numeric_limits<int64_t>::max();
  for (auto& l : layers_) start = std::min(start, l.end);
  if (start > f.context) {  // a new sequence
    for (auto& l : layers_) l = Layer();
    start = 0;
  }
  begin_chunk(chunk_frames_ > 0 ? f.context / chunk_frames_ : 0);
  prune_all(start);
  start_ = start;
  SeqPlan plan;
  if (start > 0) plan.rows = every_row(f.batch, f.length).narrow(1, start, f.length - start).contiguous();
  return plan;
}

double HeadKvCache::attended_keys(int layer, double keys) const {
  const int64_t P = tokens_per_frame_, c = chunk_frames_;
  if (P <= 0 || c <= 0 || heads_ <= 0 || layer < 0 || size_t(layer) >= layers_.size() ||
      layers_[size_t(layer)].cells.empty())
    return Ops::attended_keys(layer, keys);              // nothing stored yet: every key is computed and seen
  const int64_t a = std::llround(keys / double(P)) - c;  // the chunk's first frame
  const Layer& l = layers_[size_t(layer)];
  double total = 0;
  for (size_t i = 0; i < l.cells.size(); ++i) {
    const int64_t h = int64_t(i) % heads_;
    for (int64_t f : l.cells[i].frame)
      if (f < start_ && sees(layer, h, f, a)) total += 1;
    for (int64_t f = start_; f < a + c; ++f)
      if (sees(layer, h, f, a)) total += double(P);
  }
  return Ops::attended_keys(layer, total / double(l.cells.size()));
}

void HeadKvCache::append(Cell& cell, const at::Tensor& k, const at::Tensor& v, int64_t frame) {
  const int64_t P = k.size(0), n = int64_t(cell.frame.size());
  cell.k = cell.k.defined() ? at::cat({cell.k, k}) : k.clone();
  cell.v = cell.v.defined() ? at::cat({cell.v, v}) : v.clone();
  if (int64_t(cell.latest.size()) < P) cell.latest.resize(size_t(P), -1);
  for (int64_t j = 0; j < P; ++j) {
    cell.frame.push_back(frame);
    cell.patch.push_back(j);
    cell.count.push_back(1.0f);
    cell.latest[size_t(j)] = n + j;
  }
}

void HeadKvCache::keep_tokens(Cell& cell, const std::vector<char>& keep) {
  std::vector<int64_t> idx;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) idx.push_back(int64_t(i));
  if (idx.size() == keep.size()) return;
  if (idx.empty()) {
    Cell empty;
    empty.latest.assign(cell.latest.size(), -1);
    empty.kb = cell.kb, empty.vb = cell.vb;
    cell = std::move(empty);
    return;
  }
  auto sel = index_tensor(idx, cell.k.device());
  cell.k = cell.k.index_select(0, sel);  // copies: the dropped tokens are freed
  cell.v = cell.v.index_select(0, sel);
  Cell out;
  out.k = cell.k, out.v = cell.v, out.kb = cell.kb, out.vb = cell.vb;
  out.latest.assign(cell.latest.size(), -1);
  for (size_t i = 0; i < idx.size(); ++i) {
    const size_t j = size_t(idx[i]);
    out.frame.push_back(cell.frame[j]);
    out.patch.push_back(cell.patch[j]);
    out.count.push_back(cell.count[j]);
    out.latest[size_t(cell.patch[j])] = int64_t(i);
  }
  cell = std::move(out);
}

void HeadKvCache::store(int, int64_t, Cell& cell, const at::Tensor& k, const at::Tensor& v, int64_t frame) {
  append(cell, k, v, frame);
}

at::Tensor HeadKvCache::attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const auto [qp, kp] = shared_positions(name_, call, q, k);
  CL_CHECK(qp.numel() > 0, name_ << ": an attention call without queries");
  const int64_t* p = kp.data_ptr<int64_t>();
  const int64_t n = kp.numel(), B = q.size(0), H = q.size(1), d = q.size(3);
  if (size_t(call.layer) >= layers_.size()) layers_.resize(size_t(call.layer) + 1);
  Layer& l = layers_[size_t(call.layer)];
  if (l.cells.empty()) l.cells.resize(size_t(B * H));
  CL_CHECK(int64_t(l.cells.size()) == B * H && (heads_ == 0 || heads_ == H) && (batch_ == 0 || batch_ == B),
           name_ << ": the batch or the number of heads changed within a run");
  heads_ = H, batch_ = B;
  const int64_t* qpp = qp.data_ptr<int64_t>();
  const int64_t a = qpp[0], qframes = qpp[qp.numel() - 1] - a + 1;
  chunk_frames_ = std::max(chunk_frames_, qframes);
  tokens_per_frame_ = qp.numel() / qframes;
  CL_CHECK(tokens_per_frame_ * qframes == qp.numel(), name_ << ": every frame must have the same number of tokens");
  const int64_t first = n > 0 ? p[0] : std::numeric_limits<int64_t>::max();

  // Keys each head sees: cached tokens of frames < first, and computed ones.
  std::vector<std::vector<int64_t>> sel(static_cast<size_t>(B * H)), csel(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t j = 0; j < n; ++j)
      if (sees(call.layer, h, p[j], a)) csel[size_t(h)].push_back(j);
    for (int64_t b = 0; b < B; ++b) {
      const Cell& c = l.cells[size_t(b * H + h)];
      for (size_t t = 0; t < c.frame.size(); ++t)
        if (c.frame[t] < first && sees(call.layer, h, c.frame[t], a)) sel[size_t(b * H + h)].push_back(int64_t(t));
    }
  }
  bool uniform = true;  // every head sees the same frames and patches, with count 1 where counts count
  for (int64_t i = 0; i < B * H && uniform; ++i) {
    const Cell &c = l.cells[size_t(i)], &c0 = l.cells[0];
    const auto &s = sel[size_t(i)], &s0 = sel[0];
    uniform = s.size() == s0.size() && csel[size_t(i % H)] == csel[0];
    for (size_t t = 0; t < s.size() && uniform; ++t)
      uniform = c.frame[size_t(s[t])] == c0.frame[size_t(s0[t])] && c.patch[size_t(s[t])] == c0.patch[size_t(s0[t])] &&
                (!count_bias_ || c.count[size_t(s[t])] == 1.0f);
  }
  double served = 0, seen = 0;
  for (int64_t i = 0; i < B * H; ++i)
    served += double(sel[size_t(i)].size()), seen += double(sel[size_t(i)].size() + csel[size_t(i % H)].size());
  l.served += served / double(B * H);
  l.seen += seen / double(B * H);

  AttnCall inner = call;
  at::Tensor K, V, mask, key_frame;
  if (uniform) {
    const auto& s0 = sel[0];
    const bool all_computed = int64_t(csel[0].size()) == n;
    at::Tensor ck = k, cv = v;
    if (!all_computed) {
      auto ci = index_tensor(csel[0], k.device());
      ck = k.index_select(2, ci), cv = v.index_select(2, ci);
    }
    std::vector<int64_t> frames;
    for (int64_t t : s0) frames.push_back(l.cells[0].frame[size_t(t)]);
    for (int64_t j : csel[0]) frames.push_back(p[j]);
    if (!s0.empty()) {
      std::vector<at::Tensor> sk, sv;
      for (int64_t i = 0; i < B * H; ++i) {
        const Cell& c = l.cells[size_t(i)];
        sk.push_back(full_rows(c.k, c.kb, sel[size_t(i)]));
        sv.push_back(full_rows(c.v, c.vb, sel[size_t(i)]));
      }
      const int64_t m = int64_t(s0.size());
      ck = at::cat({at::stack(sk).view({B, H, m, d}), ck}, 2);
      cv = at::cat({at::stack(sv).view({B, H, m, d}), cv}, 2);
    }
    K = ck, V = cv;
    auto fr = index_tensor(frames);
    inner.kv_positions = fr.unsqueeze(0).expand({B, fr.numel()});
    if (observing()) key_frame = fr.view({1, 1, -1}).expand({B, H, fr.numel()});
  } else {  // per head: padded to the longest, padding masked out, log(count) added
    int64_t N = 0;
    for (int64_t i = 0; i < B * H; ++i)
      N = std::max<int64_t>(N, int64_t(sel[size_t(i)].size() + csel[size_t(i % H)].size()));
    K = at::zeros({B, H, N, d}, k.options());
    V = at::zeros({B, H, N, d}, v.options());
    std::vector<float> bias(size_t(B * H * N), -std::numeric_limits<float>::infinity());
    std::vector<int64_t> kf(size_t(B * H * N), -1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t i = b * H + h;
        const Cell& c = l.cells[size_t(i)];
        const auto &s = sel[size_t(i)], &cs = csel[size_t(h)];
        const int64_t m = int64_t(s.size()), mc = int64_t(cs.size());
        if (m > 0) {
          K[b][h].narrow(0, 0, m).copy_(full_rows(c.k, c.kb, s));
          V[b][h].narrow(0, 0, m).copy_(full_rows(c.v, c.vb, s));
        }
        if (mc > 0) {
          auto ci = index_tensor(cs, k.device());
          K[b][h].narrow(0, m, mc).copy_(k[b][h].index_select(0, ci));
          V[b][h].narrow(0, m, mc).copy_(v[b][h].index_select(0, ci));
        }
        for (int64_t t = 0; t < m; ++t) {
          bias[size_t(i * N + t)] = count_bias_ ? std::log(c.count[size_t(s[size_t(t)])]) : 0.0f;
          kf[size_t(i * N + t)] = c.frame[size_t(s[size_t(t)])];
        }
        for (int64_t t = 0; t < mc; ++t) {
          bias[size_t(i * N + m + t)] = 0.0f;
          kf[size_t(i * N + m + t)] = p[cs[size_t(t)]];
        }
      }
    mask = at::tensor(bias, at::kFloat).view({B, H, 1, N}).to(q.options());
    inner.mask = mask;
    inner.kv_positions = at::Tensor();  // differs per head
    if (observing()) key_frame = at::tensor(kf, at::kLong).view({B, H, N});
  }
  if (observing()) {
    auto scores = at::matmul(q, K.transpose(-2, -1)) * (1.0 / std::sqrt(double(d)));
    if (mask.defined()) scores = scores + mask;
    observe(call.layer, a, at::softmax(scores, -1).to(at::kFloat).cpu(), key_frame);
  }

  // Store the finished frames this call computed ([end, context)), after the keys above were
  // gathered: a merge must not change what this call attends to.
  const int64_t P = tokens_per_frame_;
  int64_t j = std::lower_bound(p, p + n, l.end) - p;
  while (j < n && p[j] < context_) {
    CL_CHECK(p[j] == l.end, name_ << ": layer " << call.layer << " computed frames from " << p[j]
                                  << " but the cache holds them only up to " << l.end);
    CL_CHECK(j + P <= n && p[j + P - 1] == p[j],
             name_ << ": frame " << p[j] << " lacks some of its " << P << " tokens");
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        store(call.layer, h, l.cells[size_t(b * H + h)], k[b][h].narrow(0, j, P), v[b][h].narrow(0, j, P), p[j]);
    l.end = p[j] + 1;
    j += P;
  }
  return Ops::attention(inner, q, K, V);
}

// ---- ForcingKvCache

void ForcingKvCache::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  HeadKvCache::begin_run(linears, ctx);
  classified_ = false;
  mass_.clear();
  calls_.clear();
}

void ForcingKvCache::begin_chunk(int64_t chunk) {
  if (chunk == 0 && classified_ && o_.profile_chunks > 0) {  // a new sequence is profiled again
    classified_ = false;
    mass_.clear();
    calls_.clear();
  }
  // The measurements stop here (observing() turns false), so the classes stay as they are.
  if (!classified_ && chunk >= o_.profile_chunks) classified_ = true;
}

bool ForcingKvCache::is_static(int layer, int64_t h) const {
  if (!classified_) return false;
  const double m = profiled_mass(layer, h);
  return (std::isnan(m) ? 0.0 : m) < o_.static_threshold;
}

double ForcingKvCache::profiled_mass(int layer, int64_t h) const {
  if (size_t(layer) >= mass_.size() || size_t(h) >= mass_[size_t(layer)].size() ||
      calls_[size_t(layer)][size_t(h)] == 0)
    return std::numeric_limits<double>::quiet_NaN();
  return mass_[size_t(layer)][size_t(h)] / calls_[size_t(layer)][size_t(h)];
}

bool ForcingKvCache::sees(int layer, int64_t h, int64_t frame, int64_t a) const {
  return !is_static(layer, h) || frame < o_.sink || frame >= a - o_.recent;
}

void ForcingKvCache::observe(int layer, int64_t a, const at::Tensor& w, const at::Tensor& key_frame) {
  // Mass on frames in [sink, a - recent): what a static head would not see.
  auto kf = key_frame.to(at::kLong);
  auto dropped = (kf >= o_.sink) & (kf < a - o_.recent) & (kf >= 0);  // [B, H, N]
  const int64_t H = w.size(1);
  if (size_t(layer) >= mass_.size()) mass_.resize(size_t(layer) + 1), calls_.resize(size_t(layer) + 1);
  mass_[size_t(layer)].resize(size_t(H), 0.0), calls_[size_t(layer)].resize(size_t(H), 0.0);
  auto per_head = (w * dropped.unsqueeze(2).to(w.scalar_type())).sum(-1).mean(2).mean(0).to(at::kDouble).contiguous();
  auto any = dropped.any(-1).any(0);  // [H]: a frame static pruning would drop was in view
  for (int64_t h = 0; h < H; ++h)
    if (any[h].item<bool>()) {
      mass_[size_t(layer)][size_t(h)] += per_head[h].item<double>();
      calls_[size_t(layer)][size_t(h)] += 1;
    }
}

void ForcingKvCache::prune(int layer, int64_t h, Cell& cell, int64_t a) {
  if (!classified_ || cell.frame.empty()) return;
  std::vector<char> keep(cell.frame.size(), 1);
  if (is_static(layer, h)) {
    for (size_t t = 0; t < keep.size(); ++t) keep[t] = cell.frame[t] < o_.sink || cell.frame[t] >= a - o_.recent;
    keep_tokens(cell, keep);
    return;
  }
  // Dynamic: frames as segments [begin, end) of tokens.
  std::vector<int64_t> seg = {0};
  for (size_t t = 1; t < cell.frame.size(); ++t)
    if (cell.frame[t] != cell.frame[t - 1]) seg.push_back(int64_t(t));
  const int64_t F = int64_t(seg.size());
  if (F <= o_.budget) return;
  seg.push_back(int64_t(cell.frame.size()));
  std::vector<at::Tensor> means;
  for (int64_t s = 0; s < F; ++s)
    means.push_back(cell.k.narrow(0, seg[size_t(s)], seg[size_t(s + 1)] - seg[size_t(s)]).mean(0));
  auto m = at::stack(means).to(at::kDouble);
  m = m / m.norm(2, 1, true).clamp_min(1e-12);
  auto sim = at::matmul(m, m.t()).cpu().contiguous();
  const double* S = sim.data_ptr<double>();
  std::vector<int64_t> kept(static_cast<size_t>(F));
  for (int64_t s = 0; s < F; ++s) kept[size_t(s)] = s;
  while (int64_t(kept.size()) > o_.budget) {
    size_t drop = 0;
    double best = -std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < kept.size(); ++i) {
      double score = -std::numeric_limits<double>::infinity();
      if (i > 0) score = std::max(score, S[kept[i] * F + kept[i - 1]]);
      if (i + 1 < kept.size()) score = std::max(score, S[kept[i] * F + kept[i + 1]]);
      if (score > best) best = score, drop = i;
    }
    for (int64_t t = seg[size_t(kept[drop])]; t < seg[size_t(kept[drop] + 1)]; ++t) keep[size_t(t)] = 0;
    kept.erase(kept.begin() + int64_t(drop));
  }
  keep_tokens(cell, keep);
}

// ---- VideoMlaCache

void VideoMlaCache::store(int, int64_t, Cell& cell, const at::Tensor& k, const at::Tensor& v, int64_t frame) {
  if (cell.kb.defined()) return append(cell, at::matmul(k, cell.kb), at::matmul(v, cell.vb), frame);
  append(cell, k, v, frame);
  int64_t frames = 0;
  for (size_t t = 0; t < cell.frame.size(); ++t) frames += t == 0 || cell.frame[t] != cell.frame[t - 1];
  if (frames < o_.fit_frames) return;
  // The top right singular vectors of the stored rows [n, d]: the rank-r subspace that keeps
  // the most of their energy (not centred).
  auto basis = [&](const at::Tensor& x) {
    auto vh = std::get<2>(at::linalg_svd(x.to(at::kDouble), /*full_matrices=*/false));  // [min(n, d), d]
    const int64_t r = std::min<int64_t>(o_.rank, vh.size(0));
    return vh.narrow(0, 0, r).t().contiguous().to(x.scalar_type());  // [d, r]
  };
  cell.kb = basis(cell.k);
  cell.vb = basis(cell.v);
  cell.k = at::matmul(cell.k, cell.kb);
  cell.v = at::matmul(cell.v, cell.vb);
}

// ---- TempCache

void TempCache::store(int, int64_t, Cell& cell, const at::Tensor& k, const at::Tensor& v, int64_t frame) {
  const int64_t P = k.size(0);
  if (!cell.k.defined() || o_.threshold > 1) return append(cell, k, v, frame);
  // Each token's match: the latest stored token of its patch.
  std::vector<int64_t> match(static_cast<size_t>(P), -1);
  for (int64_t j = 0; j < P && size_t(j) < cell.latest.size(); ++j) match[size_t(j)] = cell.latest[size_t(j)];
  std::vector<int64_t> rows, with;
  for (int64_t j = 0; j < P; ++j)
    if (match[size_t(j)] >= 0) rows.push_back(j), with.push_back(match[size_t(j)]);
  std::vector<char> merged(static_cast<size_t>(P), 0);
  if (!rows.empty()) {
    auto r = index_tensor(rows, k.device()), wi = index_tensor(with, k.device());
    auto kn = k.index_select(0, r).to(at::kDouble), km = cell.k.index_select(0, wi).to(at::kDouble);
    auto cos = ((kn * km).sum(1) / (kn.norm(2, 1) * km.norm(2, 1)).clamp_min(1e-12)).cpu().contiguous();
    const double* c = cos.data_ptr<double>();
    for (size_t i = 0; i < rows.size(); ++i)
      if (c[i] > o_.threshold) {
        const int64_t t = with[i], j = rows[i];
        merged[size_t(j)] = 1;
        const float cnt = (cell.count[size_t(t)] += 1.0f);
        auto vt = cell.v[t];
        vt.add_((v[j] - vt) / double(cnt));  // running mean of the merged values
      }
  }
  std::vector<int64_t> fresh;
  for (int64_t j = 0; j < P; ++j)
    if (!merged[size_t(j)]) fresh.push_back(j);
  if (fresh.empty()) return;
  const int64_t n = int64_t(cell.frame.size());
  auto fi = index_tensor(fresh, k.device());
  cell.k = at::cat({cell.k, k.index_select(0, fi)});
  cell.v = at::cat({cell.v, v.index_select(0, fi)});
  if (int64_t(cell.latest.size()) < P) cell.latest.resize(size_t(P), -1);
  for (size_t i = 0; i < fresh.size(); ++i) {
    cell.frame.push_back(frame);
    cell.patch.push_back(fresh[i]);
    cell.count.push_back(1.0f);
    cell.latest[size_t(fresh[i])] = n + int64_t(i);
  }
}

}  // namespace cachelab
