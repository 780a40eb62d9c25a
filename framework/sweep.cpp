// Executing an experiment: which runs, in which process, resuming, workers, stops.
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "framework/error.h"
#include "framework/interrupt.h"
#include "framework/paths.h"
#include "framework/recorder.h"
#include "framework/session.h"

extern char** environ;

namespace cachelab {
namespace fs = std::filesystem;

namespace {

std::string fmt_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof(buf), "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof(buf), "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof(buf), "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

void check_writable(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string probe = dir + "/.write_test." + std::to_string(getpid());
  std::ofstream f(probe);
  CL_CHECK(!ec && f.good(), "results folder `" << dir << "` is not writable"
                                               << (ec ? " (" + ec.message() + ")" : std::string())
                                               << "; choose another with --results DIR");
  f.close();
  fs::remove(probe, ec);
}

// Removes temporaries left by killed processes (<name>.tmp.<pid> whose pid is gone).
void remove_stale_temporaries(const std::string& dir) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const auto pos = name.rfind(".tmp.");
    if (pos == std::string::npos) continue;
    const pid_t pid = pid_t(std::atol(name.c_str() + pos + 5));
    if (pid > 0 && kill(pid, 0) != 0) fs::remove(e.path(), ec);
  }
}

std::vector<std::string> index_ids(const ExperimentSpec& spec);

// After SIGINT / SIGTERM: the index lists what finished; exit 128 + signal.
int stop_interrupted(const std::string& dir, const ExperimentSpec& spec) {
  write_index_csv(dir, index_ids(spec));
  std::printf("[cachelab] interrupted: finished runs are kept (index: %s/index.csv); the run in flight was "
              "abandoned; re-run the same command to resume\n",
              dir.c_str());
  return 128 + interrupted();
}

// The runs the index lists: references, then the runs, in experiment order.
std::vector<std::string> index_ids(const ExperimentSpec& spec) {
  std::vector<std::string> ids;
  for (auto& r : spec.references) ids.push_back(r.run_id);
  for (auto& r : spec.runs) ids.push_back(r.run_id);
  return ids;
}

int spawn_workers(const ExperimentSpec& spec, const SweepOptions& o, int total_threads) {
  const int per = std::max(1, total_threads / o.jobs);
  std::vector<pid_t> pids;
  for (int k = 0; k < o.jobs; ++k) {
    std::vector<std::string> args = {o.exe, "sweep", spec.file};
    for (auto& c : o.cli_overrides) args.push_back(c);
    args.insert(args.end(), {"--worker", std::to_string(k), "--workers", std::to_string(o.jobs), "--threads",
                             std::to_string(per), "--results", o.results_root});
    if (o.force) args.push_back("--force");
    for (auto& v : o.only) args.insert(args.end(), {"--only", v});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid;
    CL_CHECK(posix_spawn(&pid, o.exe.c_str(), nullptr, nullptr, argv.data(), environ) == 0,
             "could not start worker process " << o.exe);
    pids.push_back(pid);
  }
  int rc = 0;
  bool forwarded = false;
  for (pid_t p : pids) {
    int status = 0;
    while (waitpid(p, &status, 0) < 0 && errno == EINTR)
      if (interrupted() && !forwarded) {
        // Pass the stop on to every worker, then keep waiting for them.
        for (pid_t q : pids) kill(q, interrupted());
        forwarded = true;
      }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  }
  return rc;
}

}  // namespace

int calibrate_experiment(const ExperimentSpec& spec, const SweepOptions& o) {
  RunSession session(spec, o);
  int n = 0;
  std::set<std::string> written;
  for (auto& r : spec.runs) {
    if (!selected_by(r.name, o.only)) continue;
    n += session.calibrate(r, written);
  }
  std::printf("[cachelab] calibrated %d run(s) of `%s`\n", n, spec.name.c_str());
  return n;
}

void preflight_experiment(const ExperimentSpec& spec, const SweepOptions& o) {
  RunSession session(spec, o);
  for (auto& r : spec.runs) session.prepare(r);
  for (auto& r : spec.references) session.prepare(r);
}

int execute_experiment(const ExperimentSpec& spec, const SweepOptions& o) {
  // A worker dies with its parent (a killed sweep leaves no orphans running).
  if (o.worker >= 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    CL_CHECK(getppid() != 1, "worker started without a parent process");
  }
  std::vector<size_t> chosen;
  for (size_t i = 0; i < spec.runs.size(); ++i) {
    if (o.reference >= 0) break;  // a references task of --slurm runs no variant
    if (o.index >= 0 && int(i) != o.index) continue;
    if (!selected_by(spec.runs[i].name, o.only)) continue;
    if (o.worker >= 0 && int(i % o.workers) != o.worker) continue;
    chosen.push_back(i);
  }
  CL_CHECK(o.index < int(spec.runs.size()),
           "--index " << o.index << " is out of range: the experiment has " << spec.runs.size() << " runs (0.."
                      << spec.runs.size() - 1 << ")");
  CL_CHECK(o.reference < int(spec.references.size()),
           "--reference " << o.reference << " is out of range: the experiment has " << spec.references.size()
                          << " references");
  RunSession session(spec, o);
  check_writable(session.dir());
  // One results folder per experiment file: two files with the same `name:` would mix runs.
  const std::string source = fs::absolute(spec.file).lexically_normal().string();
  const std::string owner = experiment_source(session.dir());
  CL_CHECK(owner.empty() || owner == source,
           "results folder `" << session.dir() << "` belongs to experiment `" << owner << "`, not `" << source
                              << "` (both are named `" << spec.name
                              << "`); give one a different `name:` or use --results DIR");
  for (size_t i : chosen) session.prepare(spec.runs[i]);
  if (o.reference >= 0) session.prepare(spec.references[size_t(o.reference)]);
  else if (spec.runs.empty())
    for (auto& r : spec.references) session.prepare(r);
  const bool is_worker = o.worker >= 0;
  if (!is_worker) {
    remove_stale_temporaries(session.dir());
    std::printf("%s\n", session.system_line().c_str());
    write_experiment_file(session.dir(), spec.name, spec.config_yaml, [&] {
      std::vector<std::string> v;
      for (auto& r : spec.runs) v.push_back(r.name);
      return v;
    }(), spec.claims_json, source);
    std::printf("[cachelab] experiment `%s`: %zu run(s) + %zu reference(s) -> %s\n", spec.name.c_str(), chosen.size(),
                spec.references.size(), session.dir().c_str());
  }
  int failures = 0;
  // References first, in this process: workers then load them from the cache.
  if (!is_worker) {
    for (auto& r : spec.references) {
      bool needed = false;
      for (size_t i : chosen) needed |= spec.runs[i].reference_id == r.run_id;
      needed |= spec.runs.empty();  // an experiment of references only
      if (o.reference >= 0) needed = r.run_id == spec.references[size_t(o.reference)].run_id;
      if (!needed) continue;
      try {
        failures += !session.execute(r);
        session.reference(r);
      } catch (const Error& e) {
        std::printf("  %-28s FAILED: %s\n", r.name.c_str(), e.what());
        ++failures;
      }
      if (interrupted()) return stop_interrupted(session.dir(), spec);
    }
  }
  if (o.jobs > 1 && !is_worker) {
    const int total = int(std::thread::hardware_concurrency());
    failures += spawn_workers(spec, o, std::max(1, total));
  } else {
    const auto t0 = std::chrono::steady_clock::now();
    size_t done = 0;
    for (size_t i : chosen) {
      const RunSpec& run = spec.runs[i];
      bool ok = false;
      try {
        ok = session.execute(run);
      } catch (const Error& e) {
        std::printf("  %-28s FAILED: %s\n", run.name.c_str(), e.what());
      }
      if (interrupted()) return is_worker ? 128 + interrupted() : stop_interrupted(session.dir(), spec);
      failures += !ok;
      ++done;
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%s[%zu/%zu] elapsed %s, ETA %s\n", is_worker ? ("[worker " + std::to_string(o.worker) + "] ").c_str() : "",
                  done, chosen.size(), fmt_duration(el).c_str(),
                  fmt_duration(el / double(done) * double(chosen.size() - done)).c_str());
      std::fflush(stdout);
      if (!is_worker) write_index_csv(session.dir(), index_ids(spec));
    }
  }
  if (!is_worker) {
    const int stale = write_index_csv(session.dir(), index_ids(spec));
    if (stale > 0)
      std::printf("[cachelab] %d run file(s) in %s are from an earlier version of this experiment (another config, "
                  "weights or calibration): kept on disk, left out of the index and the report\n",
                  stale, session.dir().c_str());
    std::printf("[cachelab] %s: %d failure(s); index: %s/index.csv; report: cachelab report %s\n",
                failures ? "finished with errors" : "all runs done", failures, session.dir().c_str(),
                session.dir().c_str());
  }
  return failures ? 1 : 0;
}

}  // namespace cachelab
