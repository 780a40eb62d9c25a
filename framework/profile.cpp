#include "framework/profile.h"

#include <ATen/ATen.h>
#include <hdf5.h>

#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <unistd.h>
#include <set>

#include "framework/error.h"
#include "framework/experiment.h"
#include "framework/layer.h"
#include "framework/session.h"

namespace cachelab {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double rel_l2(const at::Tensor& a, const at::Tensor& b) {
  const double nb = b.to(at::kFloat).norm().item<double>();
  const double d = (a.to(at::kFloat) - b.to(at::kFloat)).norm().item<double>();
  return d == 0 ? 0.0 : d / std::max(nb, 1e-30);
}

// Stacked outermost: sees every site call. At the model site it runs the step once as
// is (recording every profiled site's output), then once per (site, lag) with that site
// answering with its output from `lag` steps before.
class ProfileLayer final : public SiteLayer {
 public:
  ProfileLayer(const ProfileOptions& o, Profile& out) : o_(o), p_(out) {}

  void begin_run(RunContext& ctx) override {
    active_ = ctx.recording;
    if (!active_) return;
    const auto& sites = *ctx.sites;
    col_.assign(sites.size(), -1);
    p_.site_names.clear(), p_.site_kinds.clear(), p_.site_index.clear(), p_.site_block.clear();
    for (size_t i = 0; i < sites.size(); ++i) {
      if (sites[i].kind == SiteKind::Model) continue;
      bool want = o_.kinds.empty();
      for (auto& k : o_.kinds) want = want || sites[i].kind == site_kind_from_name(k);
      if (!want) continue;
      col_[i] = int(p_.site_names.size());
      p_.site_names.push_back(sites[i].name);
      p_.site_kinds.push_back(site_kind_name(sites[i].kind));
      p_.site_index.push_back(int(i));
      p_.site_block.push_back(sites[i].block);
    }
    CL_CHECK(!p_.site_names.empty(), "profile: no site of this backbone has a kind in `--kinds`");
    const size_t T = size_t(ctx.steps), S = p_.site_names.size(), L = size_t(o_.lags) + 1;
    p_.backbone_digest = ctx.backbone_digest;
    p_.lags = o_.lags;
    p_.t.assign(T, 0);
    p_.output_norm.assign(T, kNaN);
    p_.drift_cos.assign(T, std::vector<double>(S, kNaN));
    p_.drift_rel_l1.assign(T, std::vector<double>(S, kNaN));
    p_.reuse_output.assign(T, std::vector<std::vector<double>>(S, std::vector<double>(L, kNaN)));
    p_.reuse_site = p_.reuse_output;
    p_.rates = o_.rates;
    p_.partial_output.assign(o_.rates.empty() ? 0 : T,
                             std::vector<std::vector<double>>(S, std::vector<double>(o_.rates.size(), kNaN)));
    prev_in_.assign(S, at::Tensor());
    p_.pairwise.clear();
    if (o_.pairwise) p_.pairwise.assign(S, std::vector<std::vector<double>>(T, std::vector<double>(T, kNaN)));
    history_.clear();
    all_.assign(o_.pairwise ? T : 0, {});
  }

  void begin_step(const StepIndex& step) override {
    step_ = step.index;
    if (!active_) return;
    p_.t[size_t(step_)] = step.timestep;
    current_.assign(p_.site_names.size(), at::Tensor());
    current_in_.assign(p_.site_names.size(), at::Tensor());
    model_calls_ = 0;
  }

  Tensors at(SiteCall& call, const Next& next) override {
    if (!active_) return next(call);
    if (substitute_site_ >= 0) return call.site == substitute_site_ ? Tensors{substitute_} : next(call);
    if (call.info->kind == SiteKind::Model) return at_model(call, next);
    Tensors out = next(call);
    const int c = col_[size_t(call.site)];
    if (c >= 0 && !current_[size_t(c)].defined() && !call.rows.defined()) {
      current_[size_t(c)] = out[0];
      if (!o_.rates.empty()) current_in_[size_t(c)] = call.inputs[0];
    }
    return out;
  }

  void end_step(const std::vector<uint8_t>&) override {
    if (!active_) return;
    const size_t t = size_t(step_), S = current_.size();
    for (size_t s = 0; s < S; ++s) {
      const at::Tensor& a = current_[s];
      if (!a.defined()) continue;
      if (!history_.empty() && history_.front()[s].defined()) {
        const auto af = a.to(at::kFloat).flatten(), bf = history_.front()[s].to(at::kFloat).flatten();
        const double dot = (af * bf).sum().item<double>(), na = af.norm().item<double>(), nb = bf.norm().item<double>();
        p_.drift_cos[t][s] = na > 0 && nb > 0 ? dot / (na * nb) : kNaN;
        const double l1 = bf.abs().sum().item<double>();
        p_.drift_rel_l1[t][s] = l1 > 0 ? (af - bf).abs().sum().item<double>() / l1 : kNaN;
      }
      if (o_.pairwise) {
        // Half precision keeps the [T][S] history small; distances need ~3 digits.
        all_[t].resize(S);
        all_[t][s] = a.to(at::kHalf);
        const auto af = a.to(at::kFloat);
        for (size_t j = 0; j < t; ++j)
          if (j < all_.size() && s < all_[j].size() && all_[j][s].defined() && all_[j][s].sizes() == a.sizes()) {
            const double d = rel_l2(all_[j][s].to(at::kFloat), af);
            p_.pairwise[s][j][t] = p_.pairwise[s][t][j] = d;
          }
        p_.pairwise[s][t][t] = 0;
      }
    }
    history_.push_front(current_);
    while (int(history_.size()) > std::max(o_.lags, o_.rates.empty() ? 0 : 1)) history_.pop_back();
    prev_in_ = current_in_;
    if (t + 1 == p_.t.size() && isatty(2)) std::fprintf(stderr, "\n");
  }

 private:
  // The model's output with `site` answering `value` (the rest computed).
  Tensors substituted(SiteCall& call, const Next& next, int site, const at::Tensor& value) {
    substitute_site_ = site;
    substitute_ = value;
    try {
      Tensors y = next(call);
      substitute_site_ = -1;
      return y;
    } catch (...) {
      substitute_site_ = -1;
      throw;
    }
  }

  Tensors at_model(SiteCall& call, const Next& next) {
    // A pipeline that evaluates the model more than once per step: the first call is profiled.
    if (++model_calls_ > 1) return next(call);
    Tensors out = next(call);
    const at::Tensor y = out[0];
    const size_t t = size_t(step_);
    p_.output_norm[t] = y.to(at::kFloat).norm().item<double>();
    for (size_t s = 0; s < current_.size(); ++s) {
      if (!current_[s].defined()) continue;
      for (int lag = 0; lag <= o_.lags; ++lag) {
        at::Tensor src = lag == 0 ? current_[s] : lag <= int(history_.size()) ? history_[size_t(lag - 1)][s] : at::Tensor();
        if (!src.defined() || src.sizes() != current_[s].sizes()) continue;
        p_.reuse_output[t][s][size_t(lag)] = rel_l2(substituted(call, next, p_.site_index[s], src)[0], y);
        p_.reuse_site[t][s][size_t(lag)] = rel_l2(src, current_[s]);
      }
    }
    for (size_t s = 0; s < current_.size() && !o_.rates.empty() && !history_.empty(); ++s) {
      const at::Tensor &now = current_[s], &before = history_.front()[s], &in = current_in_[s], &in0 = prev_in_[s];
      if (!now.defined() || !before.defined() || !in.defined() || !in0.defined() || now.dim() != 3 ||
          before.sizes() != now.sizes() || in.sizes() != in0.sizes() || in.size(1) != now.size(1))
        continue;
      // The tokens a partial step would compute: largest relative input change (as `schedule` rates do).
      const auto order = token_change(in, in0).argsort(0, /*descending=*/true);
      for (size_t r = 0; r < o_.rates.size(); ++r) {
        const int64_t n = std::min<int64_t>(now.size(1), int64_t(std::ceil(o_.rates[r] * double(now.size(1)))));
        const auto rows = order.narrow(0, 0, n);
        const auto mixed = before.index_copy(1, rows, now.index_select(1, rows));
        p_.partial_output[t][s][r] = rel_l2(substituted(call, next, p_.site_index[s], mixed)[0], y);
      }
    }
    // Progress: in place on a terminal, every 10th step in a log.
    if (isatty(2)) std::fprintf(stderr, "\r  profiled step %zu/%zu", t + 1, p_.t.size());
    else if ((t + 1) % 10 == 0 || t + 1 == p_.t.size()) std::fprintf(stderr, "  profiled step %zu/%zu\n", t + 1, p_.t.size());
    return out;
  }

  ProfileOptions o_;
  Profile& p_;
  bool active_ = false;
  int step_ = 0, model_calls_ = 0;
  std::vector<int> col_;                         // per site: profiled column or -1
  Tensors current_;                              // [S] this step's outputs
  std::deque<Tensors> history_;                  // [lag-1][S] earlier steps' outputs
  Tensors current_in_, prev_in_;                 // [S] this and the last step's site inputs (rates)
  std::vector<Tensors> all_;                     // [T][S] every step's outputs (half), for pairwise
  int substitute_site_ = -1;
  at::Tensor substitute_;
};

// --- HDF5 -------------------------------------------------------------------------

struct H5File {
  hid_t id;
  ~H5File() {
    if (id >= 0) H5Fclose(id);
  }
};

void write_doubles(hid_t f, const std::string& name, const std::vector<double>& data, const std::vector<hsize_t>& dims,
                   const char* meaning, const char* unit) {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  hid_t ds = H5Dcreate2(f, name.c_str(), H5T_IEEE_F64LE, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  CL_CHECK(ds >= 0, "profile: cannot create dataset " << name);
  H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data());
  for (auto [key, value] : {std::pair<const char*, const char*>{"meaning", meaning}, {"unit", unit}}) {
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    hid_t as = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(ds, key, st, as, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, st, &value);
    H5Aclose(a), H5Sclose(as), H5Tclose(st);
  }
  H5Dclose(ds), H5Sclose(space), H5Pclose(lcpl);
}

void write_strings(hid_t f, const std::string& name, const std::vector<std::string>& v) {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t st = H5Tcopy(H5T_C_S1);
  H5Tset_size(st, H5T_VARIABLE);
  hsize_t n = v.size();
  hid_t space = H5Screate_simple(1, &n, nullptr);
  hid_t ds = H5Dcreate2(f, name.c_str(), st, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  std::vector<const char*> p;
  for (auto& s : v) p.push_back(s.c_str());
  if (n) H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data());
  H5Dclose(ds), H5Sclose(space), H5Tclose(st), H5Pclose(lcpl);
}

void write_attr(hid_t f, const char* key, const std::string& value) {
  hid_t st = H5Tcopy(H5T_C_S1);
  H5Tset_size(st, H5T_VARIABLE);
  hid_t as = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, key, st, as, H5P_DEFAULT, H5P_DEFAULT);
  const char* c = value.c_str();
  H5Awrite(a, st, &c);
  H5Aclose(a), H5Sclose(as), H5Tclose(st);
}

std::string read_attr(hid_t f, const char* key) {
  if (H5Aexists(f, key) <= 0) return "";
  hid_t a = H5Aopen(f, key, H5P_DEFAULT);
  hid_t st = H5Tcopy(H5T_C_S1);
  H5Tset_size(st, H5T_VARIABLE);
  char* c = nullptr;
  H5Aread(a, st, &c);
  std::string s = c ? c : "";
  if (c) H5free_memory(c);
  H5Tclose(st), H5Aclose(a);
  return s;
}

std::vector<double> read_doubles(hid_t f, const std::string& name, std::vector<hsize_t>& dims,
                                 const std::string& path) {
  hid_t ds = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
  CL_CHECK(ds >= 0, path << ": not a cachelab profile (no dataset " << name << ")");
  hid_t space = H5Dget_space(ds);
  dims.assign(size_t(H5Sget_simple_extent_ndims(space)), 0);
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  size_t n = 1;
  for (auto d : dims) n *= d;
  std::vector<double> v(n);
  if (n) H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  H5Sclose(space), H5Dclose(ds);
  return v;
}

std::vector<std::string> read_strings(hid_t f, const std::string& name) {
  hid_t ds = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
  hid_t space = H5Dget_space(ds);
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space, &n, nullptr);
  hid_t st = H5Tcopy(H5T_C_S1);
  H5Tset_size(st, H5T_VARIABLE);
  std::vector<char*> p(n, nullptr);
  if (n) H5Dread(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data());
  std::vector<std::string> out;
  for (auto* c : p) out.push_back(c ? c : "");
  if (n) H5Dvlen_reclaim(st, space, H5P_DEFAULT, p.data());
  H5Tclose(st), H5Sclose(space), H5Dclose(ds);
  return out;
}

template <class Nested>
void flatten_into(const Nested& v, std::vector<double>& out) {
  if constexpr (std::is_same_v<Nested, double>) out.push_back(v);
  else
    for (auto& x : v) flatten_into(x, out);
}
template <class Nested>
std::vector<double> flat(const Nested& v) {
  std::vector<double> out;
  flatten_into(v, out);
  return out;
}

}  // namespace

void write_profile(const Profile& p, const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    H5File f{H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)};
    CL_CHECK(f.id >= 0, "cannot create the profile file " << tmp);
    write_attr(f.id, "schema", "cachelab-profile-1");
    write_attr(f.id, "experiment", p.experiment);
    write_attr(f.id, "reference_run", p.reference_run);
    write_attr(f.id, "backbone_digest", p.backbone_digest);
    write_attr(f.id, "config_yaml", p.config_yaml);
    write_attr(f.id, "samples", std::to_string(p.samples));
    write_attr(f.id, "lags", std::to_string(p.lags));
    const hsize_t T = p.t.size(), S = p.site_names.size(), L = hsize_t(p.lags) + 1;
    std::vector<double> t(p.t.begin(), p.t.end());
    write_doubles(f.id, "steps/t", t, {T}, "model timestep of each step", "timestep");
    write_doubles(f.id, "steps/output_norm", p.output_norm, {T}, "L2 norm of the model output (whole batch)", "1");
    write_strings(f.id, "sites/name", p.site_names);
    write_strings(f.id, "sites/kind", p.site_kinds);
    write_doubles(f.id, "sites/index", std::vector<double>(p.site_index.begin(), p.site_index.end()), {S},
                  "index in the backbone's site table", "1");
    write_doubles(f.id, "sites/block", std::vector<double>(p.site_block.begin(), p.site_block.end()), {S},
                  "block index (-1 outside the block stack)", "1");
    write_doubles(f.id, "drift/cosine", flat(p.drift_cos), {T, S}, "cosine similarity of the site output to the previous step's", "1");
    write_doubles(f.id, "drift/rel_l1", flat(p.drift_rel_l1), {T, S}, "|out_t - out_{t-1}|_1 / |out_{t-1}|_1", "1");
    write_doubles(f.id, "reuse/output_rel_l2", flat(p.reuse_output), {T, S, L},
                  "model-output error ||y' - y|| / ||y|| when only this site reuses its output from `lag` steps before",
                  "1");
    write_doubles(f.id, "reuse/site_rel_l2", flat(p.reuse_site), {T, S, L},
                  "site-output error ||out_{t-lag} - out_t|| / ||out_t||", "1");
    if (!p.rates.empty()) {
      write_doubles(f.id, "partial/rates", p.rates, {hsize_t(p.rates.size())}, "token rates r (fraction recomputed)", "1");
      write_doubles(f.id, "partial/output_rel_l2", flat(p.partial_output), {T, S, hsize_t(p.rates.size())},
                    "model-output error when only this site recomputes the fraction r of its tokens (largest input "
                    "change) and reuses the step before's output for the rest; NaN for non-token sites",
                    "1");
    }
    if (!p.pairwise.empty())
      write_doubles(f.id, "pairwise/site_rel_l2", flat(p.pairwise), {S, T, T},
                    "[s, i, j] = ||out_i - out_j|| / ||out_j|| of site s (half-precision copies)", "1");
  }
  std::filesystem::rename(tmp, path);
}

Profile read_profile(const std::string& path) {
  CL_CHECK(std::filesystem::exists(path),
           "profile file " << path << " does not exist; make it with `cachelab profile EXP.yaml` (README, \"Profiling\")");
  H5File f{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)};
  CL_CHECK(f.id >= 0, path << " is not an HDF5 file");
  CL_CHECK(read_attr(f.id, "schema") == "cachelab-profile-1", path << " is not a cachelab profile (schema attribute)");
  Profile p;
  p.experiment = read_attr(f.id, "experiment");
  p.reference_run = read_attr(f.id, "reference_run");
  p.backbone_digest = read_attr(f.id, "backbone_digest");
  p.config_yaml = read_attr(f.id, "config_yaml");
  p.samples = std::stoi(read_attr(f.id, "samples"));
  p.lags = std::stoi(read_attr(f.id, "lags"));
  std::vector<hsize_t> d;
  for (double x : read_doubles(f.id, "steps/t", d, path)) p.t.push_back(int64_t(x));
  p.output_norm = read_doubles(f.id, "steps/output_norm", d, path);
  p.site_names = read_strings(f.id, "sites/name");
  p.site_kinds = read_strings(f.id, "sites/kind");
  for (double x : read_doubles(f.id, "sites/index", d, path)) p.site_index.push_back(int(x));
  for (double x : read_doubles(f.id, "sites/block", d, path)) p.site_block.push_back(int(x));
  const size_t T = p.t.size(), S = p.site_names.size(), L = size_t(p.lags) + 1;
  auto mat = [&](const char* name) {
    auto v = read_doubles(f.id, name, d, path);
    std::vector<std::vector<double>> m(T, std::vector<double>(S));
    for (size_t i = 0; i < T; ++i)
      for (size_t s = 0; s < S; ++s) m[i][s] = v[i * S + s];
    return m;
  };
  auto cube = [&](const char* name, size_t a, size_t b, size_t c) {
    auto v = read_doubles(f.id, name, d, path);
    std::vector<std::vector<std::vector<double>>> m(a, std::vector<std::vector<double>>(b, std::vector<double>(c)));
    for (size_t i = 0; i < a; ++i)
      for (size_t j = 0; j < b; ++j)
        for (size_t k = 0; k < c; ++k) m[i][j][k] = v[(i * b + j) * c + k];
    return m;
  };
  p.drift_cos = mat("drift/cosine");
  p.drift_rel_l1 = mat("drift/rel_l1");
  p.reuse_output = cube("reuse/output_rel_l2", T, S, L);
  p.reuse_site = cube("reuse/site_rel_l2", T, S, L);
  if (H5Lexists(f.id, "pairwise", H5P_DEFAULT) > 0) p.pairwise = cube("pairwise/site_rel_l2", S, T, T);
  if (H5Lexists(f.id, "partial", H5P_DEFAULT) > 0) {
    p.rates = read_doubles(f.id, "partial/rates", d, path);
    p.partial_output = cube("partial/output_rel_l2", T, S, p.rates.size());
  }
  return p;
}

void profile_reference(const std::string& experiment, const RunSpec& ref, const ProfileOptions& o,
                       const std::function<void(SiteLayer&)>& observe, const std::string& path) {
  Profile p;
  p.experiment = experiment;
  p.reference_run = ref.run_id.empty() ? ref.name : ref.run_id;
  p.config_yaml = ref.resolved_yaml.empty() ? to_yaml(ref.config) : ref.resolved_yaml;
  p.samples = o.samples;
  ProfileLayer layer(o, p);
  std::printf("[cachelab] profiling %s: %d samples, lags 0..%d\n", p.reference_run.c_str(), o.samples, o.lags);
  std::fflush(stdout);
  observe(layer);
  write_profile(p, path);
  // One line a reader can act on: the mean lag-1 reuse error per site kind.
  std::map<std::string, std::pair<double, int>> by_kind;
  for (size_t t = 0; t < p.reuse_output.size(); ++t)
    for (size_t s = 0; s < p.site_kinds.size(); ++s)
      if (p.lags >= 1 && std::isfinite(p.reuse_output[t][s][1]))
        by_kind[p.site_kinds[s]].first += p.reuse_output[t][s][1], by_kind[p.site_kinds[s]].second++;
  std::printf("[cachelab] wrote %s (%d steps x %zu sites); mean model-output error of a lag-1 reuse:", path.c_str(),
              p.steps(), p.site_names.size());
  for (auto& [k, v] : by_kind) std::printf(" %s %.3g", k.c_str(), v.second ? v.first / v.second : kNaN);
  std::printf("\n");
  std::fflush(stdout);
}

std::vector<std::string> profile_experiment(const ExperimentSpec& spec, const SweepOptions& sweep,
                                            const ProfileOptions& o) {
  std::vector<const RunSpec*> refs;
  std::set<std::string> seen;
  for (auto& r : spec.runs) {
    if (!selected_by(r.name, sweep.only) || !seen.insert(r.reference_id).second) continue;
    for (auto& ref : spec.references)
      if (ref.run_id == r.reference_id) refs.push_back(&ref);
  }
  CL_CHECK(!refs.empty(), "profile: no run of `" << spec.name << "` is selected");
  CL_CHECK(o.output.empty() || refs.size() == 1,
           "profile: --output names one file but the selected runs have " << refs.size()
                                                                         << " different references; pick one with --only");
  RunSession session(spec, sweep);
  std::vector<std::string> written;
  for (const RunSpec* ref : refs) {
    const std::string path = o.output.empty() ? session.dir() + "/profiles/" + ref->run_id + ".h5" : o.output;
    profile_reference(spec.name, *ref, o, [&](SiteLayer& layer) { session.observe(*ref, layer, o.samples); }, path);
    written.push_back(path);
  }
  return written;
}

}  // namespace cachelab
