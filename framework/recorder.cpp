#include "framework/recorder.h"

#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "framework/error.h"
#include "framework/lock.h"

namespace cachelab {
namespace fs = std::filesystem;

namespace {

constexpr int kSchemaVersion = 2;
constexpr hsize_t kStepChunk = 16;

// The first HDF5 call that failed since the last check, with the errno of the system call
// behind it (the file driver writes "errno = N" into its error message).
struct H5Failure {
  bool failed = false;
  int err = 0;
};
thread_local H5Failure g_h5;

herr_t find_errno(unsigned, const H5E_error2_t* e, void*) {
  const char* at = e && e->desc ? std::strstr(e->desc, "errno = ") : nullptr;
  if (at && g_h5.err == 0) g_h5.err = std::atoi(at + 8);
  return 0;
}

herr_t on_h5_error(hid_t stack, void*) {
  if (g_h5.failed) return 0;
  const int sys = errno;
  g_h5.failed = true;
  g_h5.err = 0;
  H5Ewalk2(stack, H5E_WALK_DOWNWARD, find_errno, nullptr);
  if (g_h5.err == 0) g_h5.err = sys == ENOSPC || sys == EFBIG || sys == EDQUOT ? sys : 0;
  return 0;
}

// HDF5 prints its own error stack by default; cachelab reports errors itself (check_h5).
void quiet_hdf5() {
  static thread_local bool done = false;
  if (!done) H5Eset_auto2(H5E_DEFAULT, on_h5_error, nullptr), done = true;
}

void reset_h5() { g_h5 = H5Failure(); }

// Throws (naming the file and the reason: a full disk, a file-size limit) when an HDF5
// call failed since reset_h5(): a write that fails must not leave a run file that looks fine.
void check_h5(const std::string& path, const char* what) {
  if (!g_h5.failed) return;
  const int err = g_h5.err;
  reset_h5();
  fail_write(path, what, err);
}

hid_t string_type() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

void drop_attr(hid_t loc, const char* name) {
  if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
}

void attr_string(hid_t loc, const char* name, const std::string& value) {
  drop_attr(loc, name);
  hid_t type = string_type(), space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  const char* p = value.c_str();
  H5Awrite(a, type, &p);
  H5Aclose(a), H5Sclose(space), H5Tclose(type);
}

void attr_double(hid_t loc, const char* name, double value) {
  drop_attr(loc, name);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(loc, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_DOUBLE, &value);
  H5Aclose(a), H5Sclose(space);
}

void attr_int(hid_t loc, const char* name, int64_t value) {
  drop_attr(loc, name);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &value);
  H5Aclose(a), H5Sclose(space);
}

void attr_strings(hid_t loc, const char* name, const std::vector<std::string>& values) {
  drop_attr(loc, name);
  if (values.empty()) return;  // HDF5 has no empty simple dataspace: readers take a missing one as empty
  hid_t type = string_type();
  hsize_t n = values.size();
  hid_t space = H5Screate_simple(1, &n, nullptr);
  std::vector<const char*> ptrs;
  for (auto& v : values) ptrs.push_back(v.c_str());
  hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, type, ptrs.data());
  H5Aclose(a), H5Sclose(space), H5Tclose(type);
}

hid_t ensure_group(hid_t file, const std::string& name) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) > 0) return H5Gopen2(file, name.c_str(), H5P_DEFAULT);
  return H5Gcreate2(file, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
}

// Creates the parent groups of "a/b/c".
void ensure_parents(hid_t file, const std::string& path) {
  for (size_t pos = path.find('/'); pos != std::string::npos; pos = path.find('/', pos + 1))
    H5Gclose(ensure_group(file, path.substr(0, pos)));
}

void describe(hid_t file, const char* name, const std::string& meaning, const std::string& unit) {
  hid_t d = H5Oopen(file, name, H5P_DEFAULT);
  attr_string(d, "meaning", meaning);
  attr_string(d, "unit", unit);
  H5Oclose(d);
}

// An extendible dataset with the step axis first: [0] or [0, P].
void create_steps_dataset(hid_t file, const char* name, hid_t type, size_t P) {
  const int rank = P ? 2 : 1;
  hsize_t dims[2] = {0, P}, maxd[2] = {H5S_UNLIMITED, P}, chunk[2] = {kStepChunk, P ? P : 1};
  hid_t space = H5Screate_simple(rank, dims, maxd);
  hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(plist, rank, chunk);
  hid_t d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
  H5Dclose(d), H5Pclose(plist), H5Sclose(space);
}

void append_row(hid_t file, const char* name, hid_t memtype, const void* data, size_t row, size_t P) {
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  const int rank = P ? 2 : 1;
  hsize_t dims[2] = {row + 1, P};
  H5Dset_extent(d, dims);
  hid_t fspace = H5Dget_space(d);
  hsize_t start[2] = {row, 0}, count[2] = {1, P};
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, count, nullptr);
  hid_t mspace = H5Screate_simple(rank, count, nullptr);
  H5Dwrite(d, memtype, mspace, fspace, H5P_DEFAULT, data);
  H5Sclose(mspace), H5Sclose(fspace), H5Dclose(d);
}

void write_array(hid_t file, const std::string& name, hid_t ftype, hid_t mtype, const void* data,
                 const std::vector<hsize_t>& dims) {
  ensure_parents(file, name);
  hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  hid_t d = H5Dcreate2(file, name.c_str(), ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  H5Dclose(d), H5Sclose(space);
}

std::optional<std::string> read_attr_string(hid_t loc, const char* name) {
  if (H5Aexists(loc, name) <= 0) return std::nullopt;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  hid_t ft = H5Aget_type(a);
  std::optional<std::string> out;
  if (H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) > 0) {
    hid_t mt = string_type();
    char* p = nullptr;
    if (H5Aread(a, mt, &p) >= 0 && p) {
      out = std::string(p);
      H5free_memory(p);
    }
    H5Tclose(mt);
  }
  H5Tclose(ft), H5Aclose(a);
  return out;
}

herr_t collect_double(hid_t loc, const char* name, const H5A_info_t*, void* op) {
  auto* out = static_cast<std::map<std::string, double>*>(op);
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  hid_t ft = H5Aget_type(a);
  double v = 0;
  if (H5Tget_class(ft) == H5T_FLOAT || H5Tget_class(ft) == H5T_INTEGER)
    if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0) (*out)[name] = v;
  H5Tclose(ft), H5Aclose(a);
  return 0;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string csv_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.10g", v);
  return buf;
}

void open_fail(const std::string& path) {
  const std::string dir = fs::path(path).parent_path().string();
  CL_FAIL("cannot create run file `" << path << "`: is the results folder `" << dir
                                      << "` writable? (choose another with --results DIR)");
}

void write_strings(hid_t f, const char* name, const std::vector<std::string>& values) {
  hid_t type = string_type();
  hsize_t n = values.size();
  std::vector<const char*> ptrs;
  for (auto& s : values) ptrs.push_back(s.c_str());
  hid_t space = H5Screate_simple(1, &n, nullptr);
  hid_t d = H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (n) H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data());
  H5Dclose(d), H5Sclose(space), H5Tclose(type);
}

bool out_of_space_error(int err) { return err == ENOSPC || err == EFBIG || err == EDQUOT; }

// Renames a small HDF5 file written whole into place, or removes it and throws when any
// write into it failed.
void finish_small_file(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  if (g_h5.failed) {
    fs::remove(tmp, ec);
    check_h5(path, "writing");
  }
  fs::rename(tmp, path, ec);
  CL_CHECK(!ec, "cannot rename `" << tmp << "` to `" << path << "`: " << ec.message());
}

}  // namespace

RunWriter::RunWriter(const std::string& final_path, const RunMeta& m, const SiteTable& sites)
    : final_path_(final_path),
      tmp_path_(temp_path(final_path)),
      sites_(sites.names.size()),
      linears_(sites.linears.size()) {
  quiet_hdf5();
  reset_h5();
  std::error_code ec;
  fs::create_directories(fs::path(final_path).parent_path(), ec);
  if (ec) open_fail(final_path);
  hid_t f = H5Fcreate(tmp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0 && !out_of_space_error(g_h5.err)) open_fail(final_path);
  check_h5(final_path, "creating the run file");
  file_ = f;
  attr_int(f, "schema_version", kSchemaVersion);
  attr_string(f, "run_id", m.run_id);
  attr_string(f, "experiment", m.experiment);
  attr_string(f, "variant", m.variant);
  attr_string(f, "overrides", m.overrides);
  attr_string(f, "config_yaml", m.config_yaml);
  attr_string(f, "input_files", m.input_files);
  if (!m.artefacts.empty()) attr_string(f, "artefacts", m.artefacts);
  attr_string(f, "git_sha", m.git_sha);
  attr_int(f, "git_dirty", m.git_dirty);
  attr_string(f, "created_utc", m.created_utc);
  attr_string(f, "host", m.host);
  attr_int(f, "threads", m.threads);
  attr_string(f, "blas", m.blas);
  attr_string(f, "cpu", m.cpu);
  attr_string(f, "torch_version", m.torch_version);
  attr_int(f, "seed", m.seed);
  attr_string(f, "status", "running");
  attr_string(f, "error", "");
  attr_int(f, "failed_step", -1);
  attr_int(f, "is_reference", m.is_reference);
  attr_string(f, "reference_run", m.reference_run);
  attr_string(f, "warnings", m.warnings);

  H5Gclose(ensure_group(f, "steps"));
  H5Gclose(ensure_group(f, "sites"));
  H5Gclose(ensure_group(f, "summary"));
  create_steps_dataset(f, "steps/t", H5T_STD_I64LE, 0);
  create_steps_dataset(f, "steps/wall_ms", H5T_IEEE_F64LE, 0);
  create_steps_dataset(f, "steps/flops", H5T_IEEE_F64LE, 0);
  create_steps_dataset(f, "steps/err_ref_rel_l1", H5T_IEEE_F64LE, 0);
  for (const char* n : {"sites/signal", "sites/drift_cos", "sites/drift_rel_l1", "sites/err_ref_rel_l1"})
    create_steps_dataset(f, n, H5T_IEEE_F64LE, sites_);
  create_steps_dataset(f, "sites/decision", H5T_STD_U8LE, sites_);
  write_strings(f, "sites/names", sites.names);
  write_array(f, "sites/parent", H5T_STD_I32LE, H5T_NATIVE_INT, sites.parent.data(), {sites_});
  write_array(f, "sites/flops_per_sample", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, sites.flops_per_sample.data(), {sites_});
  if (sites.kind.size() == sites_) write_strings(f, "sites/kind", sites.kind);
  if (sites.block.size() == sites_) write_array(f, "sites/block", H5T_STD_I32LE, H5T_NATIVE_INT, sites.block.data(), {sites_});
  if (sites.stream.size() == sites_)
    write_array(f, "sites/stream", H5T_STD_I32LE, H5T_NATIVE_INT, sites.stream.data(), {sites_});
  H5Gclose(ensure_group(f, "linears"));
  write_strings(f, "linears/names", sites.linears);

  // Every dataset says what it holds and in which unit (schema in results/README.md).
  const char* kDocs[][3] = {
      {"steps/t", "model timestep of each sampling step", "timestep"},
      {"steps/wall_ms", "wall time of the step (model, sampler, layers), summed over batches", "ms"},
      {"steps/flops", "analytic FLOPs computed in the step, whole run (multiply-add = 2)", "FLOP"},
      {"steps/err_ref_rel_l1", "relative L1 distance of the sample after the step to the reference's", "ratio"},
      {"sites/decision", "0 compute, 1 reuse, 2 predict, 3 skipped, 4 partial, 5 blend", "enum"},
      {"sites/signal", "the decision signal of the layer that decided (NaN where none)", "policy-specific"},
      {"sites/drift_cos", "cosine similarity of the site output to its output at the previous step", "cosine"},
      {"sites/drift_rel_l1", "mean |change| / mean |previous output| of the site output", "ratio"},
      {"sites/err_ref_rel_l1", "relative L1 distance of the site output to the reference's at the same step", "ratio"},
      {"sites/names", "site names in the backbone's table order", "name"},
      {"sites/parent", "index of the enclosing site (-1 for the root)", "index"},
      {"sites/flops_per_sample", "analytic FLOPs of the site's own work for one sample", "FLOP"},
      {"linears/names", "the backbone's linear layers by checkpoint name", "name"},
  };
  for (auto& d : kDocs) describe(f, d[0], d[1], d[2]);
  if (sites.kind.size() == sites_) describe(f, "sites/kind", "structural kind of each site", "name");
  if (sites.block.size() == sites_) describe(f, "sites/block", "block (layer) index, -1 outside the stack", "index");
  if (sites.stream.size() == sites_) describe(f, "sites/stream", "0 main (image) stream, 1 second stream", "index");
  check_h5(final_path_, "writing the run's header");
}

void RunWriter::set_extras(const std::vector<ExtraInfo>& extras) {
  CL_CHECK(steps_ == 0, "internal: extras must be declared before the first step is written");
  extras_ = extras;
  hid_t f = hid_t(file_);
  for (auto& e : extras) {
    const std::string name = std::string(e.per_linear ? "linears" : "sites") + "/extra/" + e.name;
    ensure_parents(f, name);
    create_steps_dataset(f, name.c_str(), H5T_IEEE_F64LE, e.per_linear ? linears_ : sites_);
    describe(f, name.c_str(), e.meaning, e.unit);
  }
  check_h5(final_path_, "declaring extra arrays");
}

RunWriter::~RunWriter() {
  if (finished_) return;
  if (file_ >= 0) H5Fclose(hid_t(file_));
  reset_h5();
  std::error_code ec;
  fs::remove(tmp_path_, ec);
}

void RunWriter::append_step(const StepRecord& s) {
  CL_CHECK(s.decision.size() == sites_ && s.signal.size() == sites_ && s.drift_cos.size() == sites_ &&
               s.drift_rel_l1.size() == sites_ && s.err_ref.size() == sites_,
           "step record has the wrong number of sites (" << s.decision.size() << ", expected " << sites_ << ")");
  hid_t f = hid_t(file_);
  reset_h5();
  append_row(f, "steps/t", H5T_NATIVE_INT64, &s.t, steps_, 0);
  append_row(f, "steps/wall_ms", H5T_NATIVE_DOUBLE, &s.wall_ms, steps_, 0);
  append_row(f, "steps/flops", H5T_NATIVE_DOUBLE, &s.flops, steps_, 0);
  append_row(f, "steps/err_ref_rel_l1", H5T_NATIVE_DOUBLE, &s.err_ref_rel_l1, steps_, 0);
  append_row(f, "sites/decision", H5T_NATIVE_UINT8, s.decision.data(), steps_, sites_);
  append_row(f, "sites/signal", H5T_NATIVE_DOUBLE, s.signal.data(), steps_, sites_);
  append_row(f, "sites/drift_cos", H5T_NATIVE_DOUBLE, s.drift_cos.data(), steps_, sites_);
  append_row(f, "sites/drift_rel_l1", H5T_NATIVE_DOUBLE, s.drift_rel_l1.data(), steps_, sites_);
  append_row(f, "sites/err_ref_rel_l1", H5T_NATIVE_DOUBLE, s.err_ref.data(), steps_, sites_);
  for (size_t i = 0; i < extras_.size(); ++i) {
    const ExtraInfo& e = extras_[i];
    const size_t n = e.per_linear ? linears_ : sites_;
    const auto& rows = e.per_linear ? s.linear_extra : s.site_extra;
    std::vector<double> row = i < rows.size() && rows[i].size() == n ? rows[i] : std::vector<double>(n, NAN);
    const std::string name = std::string(e.per_linear ? "linears" : "sites") + "/extra/" + e.name;
    append_row(f, name.c_str(), H5T_NATIVE_DOUBLE, row.data(), steps_, n);
  }
  check_h5(final_path_, "writing a step");
  ++steps_;
}

void RunWriter::write_float_array(const std::string& name, const std::vector<float>& data,
                                  const std::vector<int64_t>& dims) {
  std::vector<hsize_t> d(dims.begin(), dims.end());
  reset_h5();
  write_array(hid_t(file_), name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data.data(), d);
  check_h5(final_path_, ("writing " + name).c_str());
}

void RunWriter::write_int64_array(const std::string& name, const std::vector<int64_t>& data) {
  reset_h5();
  write_array(hid_t(file_), name, H5T_STD_I64LE, H5T_NATIVE_INT64, data.data(), {data.size()});
  check_h5(final_path_, ("writing " + name).c_str());
}

void RunWriter::write_double_array(const std::string& name, const std::vector<double>& data) {
  reset_h5();
  write_array(hid_t(file_), name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, data.data(), {data.size()});
  check_h5(final_path_, ("writing " + name).c_str());
}

void RunWriter::set_summary(const std::map<std::string, double>& values) {
  reset_h5();
  hid_t g = H5Gopen2(hid_t(file_), "summary", H5P_DEFAULT);
  for (auto& [k, v] : values) attr_double(g, k.c_str(), v);
  H5Gclose(g);
  check_h5(final_path_, "writing the summary");
}

void RunWriter::finish(const std::string& status) {
  hid_t f = hid_t(file_);
  attr_string(f, "status", status);
  H5Fflush(f, H5F_SCOPE_GLOBAL);
  H5Fclose(f);
  file_ = -1;
  // Buffered data reaches the disk at the latest here: a failure leaves no renamed file.
  check_h5(final_path_, "finishing the run file");
  finished_ = true;
  std::error_code ec;
  fs::rename(tmp_path_, final_path_, ec);
  CL_CHECK(!ec, "cannot rename `" << tmp_path_ << "` to `" << final_path_ << "`: " << ec.message());
}

void RunWriter::finish_done() { finish("done"); }

void RunWriter::finish_failed(const std::string& error, int failed_step) {
  reset_h5();
  attr_string(hid_t(file_), "error", error);
  attr_int(hid_t(file_), "failed_step", failed_step);
  finish("failed");
}

std::optional<RunInfo> read_run_info(const std::string& path) {
  quiet_hdf5();
  if (!fs::exists(path) || H5Fis_hdf5(path.c_str()) <= 0) return std::nullopt;
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return std::nullopt;
  RunInfo info;
  info.path = path;
  auto status = read_attr_string(f, "status");
  auto id = read_attr_string(f, "run_id");
  if (!status || !id) {
    H5Fclose(f);
    return std::nullopt;
  }
  info.status = *status;
  info.run_id = *id;
  info.variant = read_attr_string(f, "variant").value_or("");
  info.overrides = read_attr_string(f, "overrides").value_or("");
  info.error = read_attr_string(f, "error").value_or("");
  info.reference_run = read_attr_string(f, "reference_run").value_or("");
  info.config_yaml = read_attr_string(f, "config_yaml").value_or("");
  int64_t is_ref = 0;
  for (auto [name, out] : {std::pair{"failed_step", &info.failed_step}, {"seed", &info.seed}, {"is_reference", &is_ref}})
    if (H5Aexists(f, name) > 0) {
      hid_t a = H5Aopen(f, name, H5P_DEFAULT);
      H5Aread(a, H5T_NATIVE_INT64, out);
      H5Aclose(a);
    }
  info.is_reference = is_ref != 0;
  if (H5Lexists(f, "summary", H5P_DEFAULT) > 0) {
    hid_t g = H5Gopen2(f, "summary", H5P_DEFAULT);
    hsize_t idx = 0;
    H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_double, &info.summary);
    H5Gclose(g);
  }
  H5Fclose(f);
  return info;
}

int run_schema_version() { return kSchemaVersion; }

namespace {

// The keys of the experiment's `sweep:` map, in order ("seed" left out: it has its own column).
std::vector<std::string> swept_keys(const std::string& dir) {
  const std::string path = dir + "/.experiment.h5";
  if (!fs::exists(path) || H5Fis_hdf5(path.c_str()) <= 0) return {};
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return {};
  const std::string yaml = read_attr_string(f, "config_yaml").value_or("");
  H5Fclose(f);
  std::vector<std::string> keys;
  try {
    const YAML::Node sweep = YAML::Load(yaml)["sweep"];
    if (sweep && sweep.IsMap())
      for (auto it : sweep)
        if (it.first.as<std::string>() != "seed") keys.push_back(it.first.as<std::string>());
  } catch (const YAML::Exception&) {
  }
  return keys;
}

// The value at a dotted key of a resolved config: a scalar as written, a map or list in flow
// style, "" when absent (e.g. `cache.interval` of a reference).
std::string config_value(const YAML::Node& config, const std::string& dotted) {
  YAML::Node node;
  node.reset(config);  // reset, not assignment: assigning a YAML::Node rewrites the node it refers to
  std::stringstream parts(dotted);
  for (std::string part; std::getline(parts, part, '.');) {
    const YAML::Node& at = node;  // const lookups add no entries
    if (at.IsMap() && at[part]) node.reset(at[part]);
    else if (at.IsSequence() && !part.empty() && part.find_first_not_of("0123456789") == std::string::npos &&
             std::stoul(part) < at.size())
      node.reset(at[std::stoul(part)]);
    else return "";
  }
  if (!node.IsDefined() || node.IsNull()) return "";
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

// `reference[<point>]` from a reference's overrides `(reference of <first run using it>)`, as
// the report names it (the point inside [] of that run, or its whole name outside a sweep).
// full: `reference[<that run>]`, for references that share a point.
std::string reference_name(const std::string& overrides, bool full = false) {
  std::string of = overrides;
  if (of.rfind("(reference of ", 0) == 0 && of.back() == ')') of = of.substr(14, of.size() - 15);
  const auto open = of.find('[');
  if (!full && open != std::string::npos && of.back() == ']') of = of.substr(open + 1, of.size() - open - 2);
  return "reference[" + of + "]";
}

}  // namespace

int write_index_csv(const std::string& dir, const std::vector<std::string>& run_ids) {
  std::vector<RunInfo> runs;
  std::set<std::string> keys;
  int left_out = 0;
  for (auto& e : fs::directory_iterator(dir)) {
    const auto p = e.path();
    if (p.extension() != ".h5" || p.filename().string()[0] == '.') continue;
    if (auto info = read_run_info(p.string())) {
      if (!run_ids.empty() && std::find(run_ids.begin(), run_ids.end(), info->run_id) == run_ids.end()) {
        ++left_out;
        continue;
      }
      for (auto& kv : info->summary) keys.insert(kv.first);
      runs.push_back(*info);
    }
  }
  auto order = [&](const RunInfo& r) {
    return size_t(std::find(run_ids.begin(), run_ids.end(), r.run_id) - run_ids.begin());
  };
  std::sort(runs.begin(), runs.end(), [&](auto& a, auto& b) {
    return run_ids.empty() ? a.run_id < b.run_id : order(a) < order(b);
  });
  const std::string tmp = temp_path(dir + "/index.csv");
  {
    std::ofstream out(tmp);
    CL_CHECK(out.good(), "cannot write the sweep index in `" << dir << "`");
    const std::vector<std::string> swept = swept_keys(dir);
    out << "run_id,run,variant,is_reference,reference_run,seed";
    for (auto& k : swept) out << "," << csv_field(k);
    out << ",status,failed_step,error,overrides";
    for (auto& k : keys) out << "," << k;
    out << "\n";
    // One reference is named plainly (as claims name it); several by their sweep point.
    const bool one_reference = std::count_if(runs.begin(), runs.end(), [](auto& r) { return r.is_reference; }) == 1;
    // Several references sharing a sweep point (variants that differ in the pipeline) are
    // named by the first run using each instead.
    std::map<std::string, int> points;
    for (auto& r : runs)
      if (r.is_reference) ++points[reference_name(r.overrides)];
    for (auto& r : runs) {
      const std::string run = !r.is_reference ? r.variant
                              : one_reference ? std::string("reference")
                                              : reference_name(r.overrides, points[reference_name(r.overrides)] > 1);
      out << csv_field(r.run_id) << "," << csv_field(run) << "," << csv_field(run.substr(0, run.find('['))) << ","
          << int(r.is_reference) << "," << csv_field(r.reference_run) << "," << r.seed;
      YAML::Node config;
      try {
        config = YAML::Load(r.config_yaml);
      } catch (const YAML::Exception&) {
      }
      for (auto& k : swept) out << "," << csv_field(config_value(config, k));
      out << "," << r.status << ","
          << (r.status == "failed" && r.failed_step >= 0 ? std::to_string(r.failed_step) : "") << ","
          << csv_field(r.error) << "," << csv_field(r.overrides);
      for (auto& k : keys) out << "," << (r.summary.count(k) ? csv_number(r.summary.at(k)) : "");
      out << "\n";
    }
    errno = 0;
    out.close();
    if (!out) {
      const int err = errno;
      std::error_code ec;
      fs::remove(tmp, ec);
      fail_write(dir + "/index.csv", "writing the index", err);
    }
  }
  fs::rename(tmp, dir + "/index.csv");
  return left_out;
}

void write_columns_h5(const std::string& path, const std::vector<std::pair<std::string, std::vector<double>>>& columns,
                      const std::map<std::string, std::string>& attrs) {
  quiet_hdf5();
  const std::string tmp = temp_path(path);
  reset_h5();
  hid_t f = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0 && !out_of_space_error(g_h5.err)) open_fail(path);
  for (auto& [k, v] : attrs) attr_string(f, k.c_str(), v);
  for (auto& [name, data] : columns)
    write_array(f, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, data.data(), {data.size()});
  if (f >= 0) H5Fclose(f);
  finish_small_file(tmp, path);
}

void write_experiment_file(const std::string& dir, const std::string& experiment, const std::string& config_yaml,
                           const std::vector<std::string>& variants, const std::string& claims_json,
                           const std::string& source_file) {
  quiet_hdf5();
  fs::create_directories(dir);
  const std::string path = dir + "/.experiment.h5", tmp = temp_path(path);
  reset_h5();
  hid_t f = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0 && !out_of_space_error(g_h5.err)) open_fail(path);
  attr_int(f, "schema_version", kSchemaVersion);
  attr_string(f, "experiment", experiment);
  attr_string(f, "config_yaml", config_yaml);
  attr_strings(f, "variants", variants);
  attr_string(f, "claims_json", claims_json);
  attr_string(f, "source_file", source_file);
  if (f >= 0) H5Fclose(f);
  finish_small_file(tmp, path);
}

std::string experiment_source(const std::string& dir) {
  quiet_hdf5();
  const std::string path = dir + "/.experiment.h5";
  if (!fs::exists(path) || H5Fis_hdf5(path.c_str()) <= 0) return "";
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return "";
  auto v = read_attr_string(f, "source_file");
  H5Fclose(f);
  return v ? *v : "";
}

}  // namespace cachelab
