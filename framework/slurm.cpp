#include "framework/slurm.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/recorder.h"

namespace cachelab {
namespace fs = std::filesystem;

namespace {

// One shell word: 'text' with every ' written as '\''.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string experiment_dir(const ExperimentSpec& spec, const SweepOptions& o) {
  return fs::absolute(resolve_path(o.results_root) + "/" + spec.name).lexically_normal().string();
}

bool run_done(const std::string& dir, const std::string& run_id) {
  auto info = read_run_info(dir + "/" + run_id + ".h5");
  return info && info->status == "done";
}

// The `cachelab sweep` command line an array task runs; `which` is --index or --reference.
std::string task_command(const ExperimentSpec& spec, const SweepOptions& o, const SlurmOptions& s,
                         const std::string& which) {
  std::vector<std::string> a = {o.exe.empty() ? std::string("cachelab") : o.exe, "sweep",
                                fs::absolute(spec.file).lexically_normal().string()};
  for (auto& c : o.cli_overrides) a.push_back(c);
  a.insert(a.end(), {"--results", fs::absolute(resolve_path(o.results_root)).lexically_normal().string()});
  const int threads = o.threads > 0 ? o.threads : s.cpus_per_task;
  if (threads > 0) a.insert(a.end(), {"--threads", std::to_string(threads)});
  std::string cmd = "exec";
  for (auto& w : a) cmd += " " + shell_quote(w);
  return cmd + " " + which + " \"$SLURM_ARRAY_TASK_ID\"";
}

std::string script(const ExperimentSpec& spec, const SweepOptions& o, const SlurmOptions& s, const std::string& dir,
                   const std::string& kind, const std::vector<size_t>& tasks, const std::string& which) {
  std::ostringstream os;
  os << "#!/bin/bash\n"
     << "# Experiment `" << spec.name << "`: the " << kind << ", one array task each (written by "
     << "`cachelab sweep --slurm`).\n"
     << "# A task skips what is already done, so resubmitting this script is safe.\n"
     << "#SBATCH --job-name=cl-" << spec.name << "-" << kind << "\n"
     << "#SBATCH --array=" << array_ranges(tasks) << "\n"
     << "#SBATCH --output=" << dir << "/slurm/logs/%x_%A_%a.out\n"
     << "#SBATCH --chdir=" << fs::current_path().string() << "\n";
  if (!s.partition.empty()) os << "#SBATCH --partition=" << s.partition << "\n";
  if (!s.time.empty()) os << "#SBATCH --time=" << s.time << "\n";
  if (s.cpus_per_task > 0) os << "#SBATCH --cpus-per-task=" << s.cpus_per_task << "\n";
  if (!s.mem.empty()) os << "#SBATCH --mem=" << s.mem << "\n";
  for (auto& a : s.sbatch_args) os << "#SBATCH " << a << "\n";
  // Written out so that a task finds the same project and data with --export=NONE too.
  for (const char* v : {"CACHELAB_ROOT", "CACHELAB_DATA"})
    if (const char* val = std::getenv(v)) os << "export " << v << "=" << shell_quote(val) << "\n";
  os << "export OMP_WAIT_POLICY=PASSIVE\n" << task_command(spec, o, s, which) << "\n";
  return os.str();
}

// Runs argv (PATH lookup), returns its exit code and stdout + stderr in *out; 127 when it
// could not be started.
int run_capture(const std::vector<std::string>& args, std::string* out) {
  std::vector<char*> argv;  // built before fork: the child only calls async-signal-safe functions
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int fd[2];
  CL_CHECK(pipe(fd) == 0, "cannot create a pipe to run " << args[0]);
  const pid_t pid = fork();
  CL_CHECK(pid >= 0, "cannot start " << args[0]);
  if (pid == 0) {
    dup2(fd[1], 1);
    dup2(fd[1], 2);
    close(fd[0]);
    close(fd[1]);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(fd[1]);
  char buf[4096];
  ssize_t n;
  while ((n = read(fd[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) out->append(buf, size_t(n));
  close(fd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Submits one script; returns the job id sbatch printed (--parsable: "id" or "id;cluster").
std::string sbatch(const std::string& script_path, const std::string& dependency) {
  std::vector<std::string> args = {"sbatch", "--parsable"};
  if (!dependency.empty()) args.push_back("--dependency=afterany:" + dependency);
  args.push_back(script_path);
  std::string out;
  const int rc = run_capture(args, &out);
  CL_CHECK(rc != 127, "`sbatch` was not found: --slurm needs Slurm's client commands on this machine (Debian: "
                      "slurm-client); --dry-run prints the scripts without them");
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  CL_CHECK(rc == 0, "sbatch refused " << script_path << " (exit " << rc << "): " << out);
  // The job id is the line that is only digits (";cluster" may follow); warnings are not.
  std::istringstream lines(out);
  std::string line, job;
  while (std::getline(lines, line)) {
    const std::string id = line.substr(0, line.find(';'));
    if (!id.empty() && id.find_first_not_of("0123456789") == std::string::npos) job = id;
  }
  CL_CHECK(!job.empty(), "sbatch printed `" << out << "`, not a job id");
  return job;
}

void write_text(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream f(tmp);
    f << text;
    CL_CHECK(f.good(), "cannot write `" << tmp << "`");
  }
  fs::rename(tmp, path);
}

std::string utc_now() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// One results folder per experiment file (as the sweep itself checks).
void check_owner(const ExperimentSpec& spec, const std::string& dir) {
  const std::string source = fs::absolute(spec.file).lexically_normal().string();
  const std::string owner = experiment_source(dir);
  CL_CHECK(owner.empty() || owner == source,
           "results folder `" << dir << "` belongs to experiment `" << owner << "`, not `" << source
                              << "`; give one a different `name:` or use --results DIR");
}

}  // namespace

std::string array_ranges(const std::vector<size_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(v[i]);
    if (j > i) out += "-" + std::to_string(v[j]);
    i = j + 1;
  }
  return out;
}

SlurmPlan plan_slurm(const ExperimentSpec& spec, const SweepOptions& o, const SlurmOptions& s) {
  CL_CHECK(!o.force, "--force with --slurm would redo finished runs in every resubmitted task; delete the run "
                     "files to redo instead");
  SlurmPlan plan;
  plan.dir = experiment_dir(spec, o);
  for (size_t i = 0; i < spec.runs.size(); ++i)
    if (selected_by(spec.runs[i].name, o.only) && !run_done(plan.dir, spec.runs[i].run_id)) plan.runs.push_back(i);
  for (size_t k = 0; k < spec.references.size(); ++k) {
    const RunSpec& r = spec.references[k];
    bool needed = spec.runs.empty();  // an experiment of references only
    for (size_t i : plan.runs) needed |= spec.runs[i].reference_id == r.run_id;
    // A variant needs the reference's run file and its trace in .cache/.
    const bool ready = run_done(plan.dir, r.run_id) && fs::exists(plan.dir + "/.cache/" + r.run_id + ".pt");
    if (needed && !(spec.runs.empty() ? run_done(plan.dir, r.run_id) : ready)) plan.references.push_back(k);
  }
  if (!plan.references.empty())
    plan.references_script = script(spec, o, s, plan.dir, "references", plan.references, "--reference");
  if (!plan.runs.empty()) plan.runs_script = script(spec, o, s, plan.dir, "runs", plan.runs, "--index");
  return plan;
}

int submit_slurm(const ExperimentSpec& spec, const SweepOptions& o, const SlurmOptions& s) {
  const SlurmPlan plan = plan_slurm(spec, o, s);
  const std::string sdir = plan.dir + "/slurm";
  if (plan.references.empty() && plan.runs.empty()) {
    std::printf("[cachelab] experiment `%s`: every run is done in %s; nothing to submit (cachelab sweep %s "
                "--collect writes the index)\n",
                spec.name.c_str(), plan.dir.c_str(), spec.file.c_str());
    return 0;
  }
  if (s.dry_run) {
    for (auto [script, name, dep] : {std::tuple{&plan.references_script, "references", ""},
                                     std::tuple{&plan.runs_script, "runs",
                                                plan.references.empty() ? "" : " --dependency=afterany:<references job>"}}) {
      if (script->empty()) continue;
      std::printf("# --- %s/%s.sbatch (submitted as: sbatch --parsable%s %s/%s.sbatch)\n%s\n", sdir.c_str(), name, dep,
                  sdir.c_str(), name, script->c_str());
    }
    std::printf("[cachelab] dry run: %zu reference task(s), %zu run task(s); nothing written or submitted\n",
                plan.references.size(), plan.runs.size());
    return 0;
  }
  check_owner(spec, plan.dir);
  std::error_code ec;
  fs::create_directories(sdir + "/logs", ec);
  CL_CHECK(!ec, "cannot create `" << sdir << "/logs`: " << ec.message() << "; choose another --results DIR");
  std::string ref_job, run_job;
  if (!plan.references.empty()) {
    write_text(sdir + "/references.sbatch", plan.references_script);
    ref_job = sbatch(sdir + "/references.sbatch", "");
  }
  if (!plan.runs.empty() && plan.runs.back() >= 1001)
    std::fprintf(stderr, "warning: array index %zu: a cluster with Slurm's default MaxArraySize (1001) refuses "
                         "indices above 1000; split the sweep with --only if sbatch does\n", plan.runs.back());
  if (!plan.runs.empty()) {
    write_text(sdir + "/runs.sbatch", plan.runs_script);
    run_job = sbatch(sdir + "/runs.sbatch", ref_job);
  }
  {
    std::ofstream log(sdir + "/submissions.txt", std::ios::app);
    log << utc_now() << " references " << (ref_job.empty() ? "-" : ref_job) << " ["
        << array_ranges(plan.references) << "] runs " << (run_job.empty() ? "-" : run_job) << " ["
        << array_ranges(plan.runs) << "]\n";
  }
  std::printf("[cachelab] experiment `%s` submitted to Slurm (scripts and logs in %s):\n", spec.name.c_str(),
              sdir.c_str());
  if (!ref_job.empty())
    std::printf("  references  job %s, %zu task(s) [%s]\n", ref_job.c_str(), plan.references.size(),
                array_ranges(plan.references).c_str());
  if (!run_job.empty())
    std::printf("  runs        job %s, %zu task(s) [%s]%s\n", run_job.c_str(), plan.runs.size(),
                array_ranges(plan.runs).c_str(),
                ref_job.empty() ? "" : (", after job " + ref_job + " ends").c_str());
  const std::string jobs = ref_job.empty() ? run_job : run_job.empty() ? ref_job : ref_job + "," + run_job;
  std::printf("  watch:      squeue -j %s   (logs: %s/logs/)\n", jobs.c_str(), sdir.c_str());
  std::printf("  collect:    cachelab sweep %s --collect   (writes index.csv, lists what is not done; exit 0 "
              "when all are)\n",
              spec.file.c_str());
  std::printf("  resubmit:   the same --slurm command submits only what is not done\n");
  return 0;
}

const char* run_state_name(RunState s) {
  switch (s) {
    case RunState::Done: return "done";
    case RunState::Failed: return "failed";
    case RunState::InProgress: return "in progress";
    case RunState::Missing: return "missing";
  }
  return "?";
}

RunState run_state(const std::string& dir, const std::string& run_id) {
  // A finished file says done or failed; any other status (an interrupted run) is redone.
  if (auto info = read_run_info(dir + "/" + run_id + ".h5"))
    if (info->status == "done" || info->status == "failed")
      return info->status == "done" ? RunState::Done : RunState::Failed;
  std::error_code ec;
  const std::string prefix = run_id + ".";
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) == 0 && name != run_id + ".h5") return RunState::InProgress;
  }
  return RunState::Missing;
}

int collect_experiment(const ExperimentSpec& spec, const SweepOptions& o) {
  const std::string dir = experiment_dir(spec, o);
  std::vector<const RunSpec*> todo;
  for (auto& r : spec.runs)
    if (selected_by(r.name, o.only)) todo.push_back(&r);
  for (auto& ref : spec.references) {
    bool needed = spec.runs.empty();
    for (auto* r : todo) needed |= r->reference_id == ref.run_id;
    if (needed) todo.insert(todo.begin(), &ref);
  }
  const bool exists = fs::is_directory(dir);
  if (exists) {
    check_owner(spec, dir);
    std::vector<std::string> ids;
    for (auto& r : spec.references) ids.push_back(r.run_id);
    for (auto& r : spec.runs) ids.push_back(r.run_id);
    write_index_csv(dir, ids);
  }
  int count[4] = {0, 0, 0, 0};
  for (auto* r : todo) {
    const RunState st = exists ? run_state(dir, r->run_id) : RunState::Missing;
    ++count[int(st)];
    if (st == RunState::Done) continue;
    std::string why;
    auto info = exists ? read_run_info(dir + "/" + r->run_id + ".h5") : std::nullopt;
    if (st == RunState::Failed) {
      why = info->failed_step >= 0 ? " at step " + std::to_string(info->failed_step) : "";
      why += ": " + info->error;
    } else if (info) {
      why = " (its file says `" + info->status + "`)";
    }
    std::printf("  %-28s %-24s %s%s\n", r->name.c_str(), r->run_id.c_str(), run_state_name(st), why.c_str());
  }
  std::printf("[cachelab] experiment `%s`: %d of %zu run(s) done (references included), %d failed, %d in progress, "
              "%d missing; index: %s\n",
              spec.name.c_str(), count[int(RunState::Done)], todo.size(), count[int(RunState::Failed)],
              count[int(RunState::InProgress)], count[int(RunState::Missing)],
              exists ? (dir + "/index.csv").c_str() : "(nothing has run yet)");
  if (count[int(RunState::InProgress)] + count[int(RunState::Missing)] > 0) {
    std::printf("[cachelab] not complete (exit %d): wait for the tasks in progress, or resubmit with `cachelab sweep "
                "%s --slurm` (it submits only what is not done)\n",
                kCollectIncomplete, spec.file.c_str());
    return kCollectIncomplete;
  }
  if (count[int(RunState::Failed)] > 0) {
    std::printf("[cachelab] every run finished, %d failed (exit 1): see the errors above; a resubmission redoes them\n",
                count[int(RunState::Failed)]);
    return 1;
  }
  std::printf("[cachelab] all runs done\n");
  return 0;
}

}  // namespace cachelab
