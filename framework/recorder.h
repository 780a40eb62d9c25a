// The HDF5 run file (schema in results/README.md) and the sweep index. Torch-free.
// One writer per file; crash-safe: the file is written as a temporary (framework/lock.h:
// temp_path) and renamed when finished, and a writer destroyed unfinished removes it. A
// failed write throws naming the file and the reason (a full disk).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cachelab {

struct RunMeta {
  std::string run_id, experiment, variant, overrides, config_yaml, git_sha, created_utc, host, blas, cpu, torch_version,
      reference_run;
  std::string warnings;  // what the user should know about this run (e.g. a random-weight model)
  std::string input_files;  // "path=digest;..." of the files the run read (weights, calibrations)
  std::string artefacts;    // JSON array: the artefacts it read, their maker and making time (framework/artefacts.h)
  bool git_dirty = false, is_reference = false;
  int threads = 1;
  int64_t seed = 0;
};

struct SiteTable {
  std::vector<std::string> names;
  std::vector<int> parent;
  std::vector<double> flops_per_sample;
  std::vector<std::string> kind;    // model, body, block, attn, mlp, branch, kv, other
  std::vector<int> block, stream;   // block index (-1 outside the stack); stream (0 main)
  std::vector<std::string> linears; // the backbone's linear layers, by checkpoint name
};

// An extra per-step array a layer logs: /sites/extra/<name> [T, P] or
// /linears/extra/<name> [T, L], with `meaning` and `unit` attributes.
struct ExtraInfo {
  std::string name, unit, meaning;
  bool per_linear = false;
};

// One sampling step. Per-site vectors have one entry per site (P).
struct StepRecord {
  int64_t t = 0;               // model timestep
  double wall_ms = 0;          // milliseconds
  double flops = 0;            // FLOPs computed in the step (whole batch)
  double err_ref_rel_l1 = 0;   // sample vs reference sample after this step
  std::vector<uint8_t> decision;
  std::vector<double> signal, drift_cos, drift_rel_l1, err_ref;
  std::vector<std::vector<double>> site_extra;    // [extra][site] (NaN where not logged)
  std::vector<std::vector<double>> linear_extra;  // [extra][linear]
};

class RunWriter {
 public:
  // Creates the temporary with status=running; throws naming the folder if unwritable.
  RunWriter(const std::string& final_path, const RunMeta& meta, const SiteTable& sites);
  ~RunWriter();
  RunWriter(const RunWriter&) = delete;
  RunWriter& operator=(const RunWriter&) = delete;

  // Declares the extra arrays (before the first append_step).
  void set_extras(const std::vector<ExtraInfo>& extras);
  void append_step(const StepRecord& step);
  // e.g. "samples/x" with dims {N, C, H, W}; groups are created as needed.
  void write_float_array(const std::string& dataset, const std::vector<float>& data, const std::vector<int64_t>& dims);
  void write_int64_array(const std::string& dataset, const std::vector<int64_t>& data);
  void write_double_array(const std::string& dataset, const std::vector<double>& data);
  void set_summary(const std::map<std::string, double>& values);
  void finish_done();
  // Kept as a file (so the index lists it); a re-run sweep redoes it.
  void finish_failed(const std::string& error, int failed_step);

 private:
  void finish(const std::string& status);
  std::string final_path_, tmp_path_;
  int64_t file_ = -1;  // hid_t
  size_t sites_ = 0, linears_ = 0, steps_ = 0;
  std::vector<ExtraInfo> extras_;
  bool finished_ = false;
};

struct RunInfo {
  std::string path, run_id, variant, status, overrides, error, reference_run, config_yaml;
  int64_t failed_step = -1, seed = 0;
  bool is_reference = false;
  std::map<std::string, double> summary;
};
// nullopt when missing, unreadable, truncated or not a run file.
std::optional<RunInfo> read_run_info(const std::string& path);

// The run file schema version this build writes (part of every run's identity).
int run_schema_version();

// Rewrites <dir>/index.csv from the run files in <dir> (atomically). Columns: run_id, run (the
// run's name with its sweep point), variant (without it), is_reference, reference_run, seed,
// one column per key of the experiment's `sweep:` (from <dir>/.experiment.h5; the value in
// the run's resolved config), status, failed_step, error, overrides, then every summary
// value. tools/export.py takes its identity columns from here. With `run_ids`, only
// those runs, in that order (the experiment's runs as it is now; files of runs from an
// earlier version of the experiment stay on disk but leave the index). Returns the number
// of run files left out.
int write_index_csv(const std::string& dir, const std::vector<std::string>& run_ids = {});

// A small table as 1-D float64 datasets (e.g. a training loss curve), written atomically.
void write_columns_h5(const std::string& path, const std::vector<std::pair<std::string, std::vector<double>>>& columns,
                      const std::map<std::string, std::string>& attrs);

void write_experiment_file(const std::string& dir, const std::string& experiment, const std::string& config_yaml,
                           const std::vector<std::string>& variants, const std::string& claims_json,
                           const std::string& source_file);
// The experiment file (absolute path) a results folder belongs to, "" if none recorded.
std::string experiment_source(const std::string& dir);

}  // namespace cachelab
