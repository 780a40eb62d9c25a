// A sweep on a Slurm cluster: `cachelab sweep EXP --slurm` writes two sbatch scripts and
// submits them as job arrays (the references first, then the runs, which wait for them);
// `cachelab sweep EXP --collect` rebuilds the index from whatever runs finished and says
// what is missing. Torch-free: nothing here runs a model.
//
// Files, under the experiment's results folder <results>/<experiment>/:
//   slurm/references.sbatch   one array task per reference: `cachelab sweep EXP --reference i`
//   slurm/runs.sbatch         one array task per run:       `cachelab sweep EXP --index i`
//   slurm/logs/               each task's output (<job name>_<array job id>_<task>.out)
//   slurm/submissions.txt     one line per submission: time, job ids, task counts
// A submission includes only what is not done yet, so submitting again after a cancelled,
// failed or timed-out task redoes exactly those runs.
#pragma once
#include <string>
#include <vector>

#include "framework/experiment.h"
#include "framework/session.h"

namespace cachelab {

struct SlurmOptions {
  std::string partition;    // --partition (empty: the cluster's default)
  std::string time;         // --time, e.g. 01:00:00 (empty: the partition's default)
  int cpus_per_task = 0;    // --cpus-per-task (0: not set); also the runs' --threads unless given
  std::string mem;          // --mem, e.g. 4G (empty: not set)
  std::vector<std::string> sbatch_args;  // more `#SBATCH` lines, verbatim (e.g. --account=A)
  bool dry_run = false;     // print the scripts and the sbatch commands, write and submit nothing
};

// What one submission asks for.
struct SlurmPlan {
  std::string dir;                           // <results>/<experiment>, absolute
  std::vector<size_t> references, runs;      // indices into spec.references / spec.runs
  std::string references_script, runs_script;  // sbatch script texts ("" when nothing to do)
};

// The references and runs not done yet (all of them with --force, which --slurm refuses),
// and the scripts that run them. `exe` and the experiment file are written as absolute paths.
SlurmPlan plan_slurm(const ExperimentSpec& spec, const SweepOptions& sweep, const SlurmOptions& slurm);

// `sweep --slurm`: submits the plan with sbatch (the runs with --dependency=afterany on the
// references' job), prints the job ids and how to watch and collect. Returns 0, or throws
// (no sbatch, sbatch refused). With dry_run prints the scripts only.
int submit_slurm(const ExperimentSpec& spec, const SweepOptions& sweep, const SlurmOptions& slurm);

// Slurm's array syntax for sorted distinct indices: {0,1,2,5,7,8} -> "0-2,5,7-8".
std::string array_ranges(const std::vector<size_t>& indices);

// The state of one run as its results folder shows it.
enum class RunState { Done, Failed, InProgress, Missing };
const char* run_state_name(RunState s);
// Done / Failed from the run file (a file with another status, e.g. an interrupted run, counts
// as not there); InProgress when a temporary or lock file of the run exists (<run_id>.h5.tmp.*, <run_id>.lock, ...: written by a live task, or left by a killed
// one until the next sweep in that folder cleans it); Missing otherwise.
RunState run_state(const std::string& dir, const std::string& run_id);

// `sweep --collect` exit codes: 0 every run is done; 1 every run finished but some failed;
// 4 some runs are missing or in progress (resubmit with --slurm, or wait).
constexpr int kCollectIncomplete = 4;
// Writes <dir>/index.csv from the finished runs, prints one line per run that is not done
// and a summary; returns one of the codes above.
int collect_experiment(const ExperimentSpec& spec, const SweepOptions& sweep);

}  // namespace cachelab
