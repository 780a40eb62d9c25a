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
#include "framework/lock.h"
#include "framework/paths.h"
#include "framework/recorder.h"
#include "framework/session.h"
#include "framework/system_info.h"

extern char** environ;

namespace cachelab {
namespace fs = std::filesystem;

namespace {

std::string fmt_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof(buf), "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof(buf), "%dm%02ds", int(s) / 60, int(s) % 60);
  else if (s < 2 * 86400) std::snprintf(buf, sizeof(buf), "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  else std::snprintf(buf, sizeof(buf), "%.0f days", s / 86400);
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

std::string fmt_bytes(double b) {
  char buf[32];
  if (b >= 1e9) std::snprintf(buf, sizeof(buf), "%.1f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(buf, sizeof(buf), "%.0f MB", b / 1e6);
  else std::snprintf(buf, sizeof(buf), "%.0f KB", b / 1e3);
  return buf;
}

// Memory this process may still take: MemAvailable, or what the cgroup's limit leaves when
// less (a Slurm job's allocation). -1 when unknown.
double available_memory() {
  double avail = -1;
  std::ifstream info("/proc/meminfo");
  for (std::string line; std::getline(info, line);)
    if (line.rfind("MemAvailable:", 0) == 0) avail = std::atof(line.c_str() + 13) * 1024;
  std::ifstream max("/sys/fs/cgroup/memory.max"), cur("/sys/fs/cgroup/memory.current");
  std::string m;
  double used = 0;
  if (max >> m && m != "max" && cur >> used) {
    const double left = std::atof(m.c_str()) - used;
    if (avail < 0 || left < avail) avail = left;
  }
  return avail;
}

bool pending(const std::string& dir, const RunSpec& r, bool force) {
  if (force) return true;
  auto info = read_run_info(dir + "/" + r.run_id + ".h5");
  return !info || info->status != "done";
}

// What making the artefacts the chosen pending runs read will cost at least (those not made
// yet, each once): one pass of each calibration run, one pass of each profile's reference
// (per lag too) and each router's uncached trajectories. Threshold searches (a curve of runs),
// correctors fitted along a second pass and a router's training iterations cost more.
struct ArtefactCost {
  int calibrations = 0, schedules = 0, routers = 0;
  double flops = 0, seconds = 0;
};
ArtefactCost artefact_cost(RunSession& session, const ExperimentSpec& spec, const SweepOptions& o,
                           const std::vector<size_t>& chosen) {
  ArtefactCost c;
  std::set<std::string> seen;
  auto add = [&](const ConfigNode& config, double samples) {
    RunSpec pass;
    pass.is_reference = true;  // (no timing repetitions)
    pass.config = config;
    pass.config.child("run").child("samples") = ConfigNode::make_scalar(std::to_string(int64_t(samples)));
    const RunCost rc = session.cost(pass);
    c.flops += rc.flops, c.seconds += rc.seconds;
  };
  auto maker_of = [&](const std::string& name) -> const RunSpec* {
    for (auto& r : spec.runs)
      if (r.name == name) return &r;
    return nullptr;
  };
  auto number = [](const ConfigNode* n, double fallback) { return n && n->is_scalar() ? std::atof(n->scalar.c_str()) : fallback; };
  for (size_t i : chosen) {
    const RunSpec& r = spec.runs[i];
    if (!pending(session.dir(), r, o.force)) continue;
    for (auto& a : r.artefacts) {
      if (fs::exists(resolve_path(a.path)) || !seen.insert(a.path).second) continue;
      const RunSpec* maker = maker_of(a.maker);
      if (a.kind == "router") {
        ++c.routers;
        const ConfigNode* t = a.recipe.find("trainer");
        if (maker) add(maker->config, number(t ? t->find("trajectories") : nullptr, 128) + number(t ? t->find("eval_trajectories") : nullptr, 8));
      } else if (a.kind == "schedule") {
        ++c.schedules;
        const ConfigNode& prof = *a.recipe.find("profile");
        const std::string path = prof.find("path")->scalar;
        if (!fs::exists(resolve_path(path)) && seen.insert(path).second)
          add(*a.recipe.find("reference"), number(prof.find("profile_samples"), 4) * (1 + number(prof.find("profile_lags"), 3)));
      } else {
        ++c.calibrations;
        if (maker && !maker->calibration_config.is_null()) {
          const ConfigNode* run = maker->calibration_config.find("run");
          add(maker->calibration_config, number(run ? run->find("samples") : nullptr, 1));
        }
      }
    }
  }
  return c;
}

// Before anything runs: what this process's share of the sweep will cost at most (runs not
// done yet, the references they need), refused when it cannot fit in memory or on disk, or
// would take longer than --max-hours. Returns the memory it estimated per process (0: nothing to do).
double check_resources(RunSession& session, const ExperimentSpec& spec, const SweepOptions& o,
                     const std::vector<size_t>& chosen) {
  const std::string& dir = session.dir();
  std::set<std::string> refs_needed;
  double flops = 0, seconds = 0, disk = 0, run_mem = 0, ref_mem = 0, weights = 0, ref_flops = 0, ref_s = 0;
  int todo = 0, max_samples = 0;
  for (size_t i : chosen) {
    const RunSpec& r = spec.runs[i];
    if (!pending(dir, r, o.force)) continue;
    refs_needed.insert(r.reference_id);
    const RunCost c = session.cost(r);
    flops += c.flops, seconds += c.seconds, disk += c.file_bytes, ++todo;
    run_mem = std::max(run_mem, c.memory_bytes);
    weights = std::max(weights, c.weights_bytes);
  }
  for (auto& r : spec.references) {
    if (!refs_needed.count(r.run_id) && !(spec.runs.empty() && pending(dir, r, o.force))) continue;
    const RunCost c = session.cost(r);
    ref_mem += c.reference_bytes;
    weights = std::max(weights, c.weights_bytes);
    ref_flops = c.flops, ref_s = c.seconds;
    if (pending(dir, r, o.force) || !fs::exists(dir + "/.cache/" + r.run_id + ".pt")) {
      flops += c.flops, seconds += c.seconds, disk += c.file_bytes + c.reference_bytes, ++todo;
      run_mem = std::max(run_mem, c.memory_bytes);
    }
  }
  for (auto& r : spec.runs) max_samples = std::max(max_samples, r.config.find("run") && r.config.find("run")->find("samples")
                                                                  ? std::atoi(r.config.find("run")->find("samples")->scalar.c_str())
                                                                  : 0);
  if (todo == 0) return 0;
  const double procs = std::min<double>(std::max(1, o.jobs), todo);
  const ArtefactCost art = artefact_cost(session, spec, o, chosen);
  // Each process also holds what this one holds now (LibTorch, the backbones loaded to measure
  // the unit costs): its resident memory, or the weights where /proc cannot tell.
  const double held = std::max(weights, resident_bytes());
  const double memory = (held + ref_mem + run_mem) * procs, wall = seconds / procs + art.seconds;
  const double avail = available_memory(), free = free_bytes(dir);
  std::printf("[cachelab] preflight: %d run(s) to do, %.3g FLOP, at most %s at %.2g GFLOP/s (measured here); "
              "memory ~%s of %s available; disk ~%s of %s free\n",
              todo, flops, fmt_duration(wall).c_str(), ref_s > 0 ? ref_flops / ref_s / 1e9 : 0.0,
              fmt_bytes(memory).c_str(), avail < 0 ? "?" : fmt_bytes(avail).c_str(), fmt_bytes(disk).c_str(),
              free < 0 ? "?" : fmt_bytes(free).c_str());
  if (art.calibrations + art.schedules + art.routers > 0)
    std::printf("[cachelab] preflight: first %d artefact(s) to make (%d calibration file(s), %d schedule(s), %d router(s)), "
                "at least %.3g FLOP, %s (one pass of each calibration run, profile and router pool; threshold searches, "
                "second fitting passes and router training take more)\n",
                art.calibrations + art.schedules + art.routers, art.calibrations, art.schedules, art.routers, art.flops,
                fmt_duration(art.seconds).c_str());
  const std::string samples = max_samples > 0 ? " (now " + std::to_string(max_samples) + ")" : "";
  CL_CHECK(avail < 0 || memory <= avail,
           "preflight: the sweep needs about " << fmt_bytes(memory) << " of memory (the process and its weights, "
           "final samples, reference trajectories, activations) but " << fmt_bytes(avail) << " is available: lower run.samples" << samples
           << " or run.batch" << (o.jobs > 1 ? ", or --jobs" : ""));
  CL_CHECK(free < 0 || disk <= free,
           "preflight: the sweep writes about " << fmt_bytes(disk) << " (run files, reference caches in .cache/) but `"
           << dir << "` has " << fmt_bytes(free) << " free: lower run.samples" << samples
           << " or run.save_samples, or use --results DIR elsewhere");
  CL_CHECK(o.max_hours <= 0 || wall <= o.max_hours * 3600,
           "preflight: the sweep would take up to " << fmt_duration(wall) << " in this process (" << todo
           << " run(s), " << flops << " FLOP at the speed measured here), over the limit of " << o.max_hours
           << " h: lower run.samples" << samples << " or sampler.steps, split it (--jobs, --index), or accept it "
           "with --allow-long (or --max-hours H)");
  return memory / procs;
}

// Removes the reference caches whose every run is done (they are only read to measure
// variants); CACHELAB_KEEP_CACHE=1 keeps them.
void prune_reference_caches(const std::string& dir, const ExperimentSpec& spec) {
  if (const char* k = std::getenv("CACHELAB_KEEP_CACHE"); k && *k && *k != '0') return;
  for (auto& ref : spec.references) {
    const std::string cache = dir + "/.cache/" + ref.run_id + ".pt";
    std::error_code ec;
    if (!fs::exists(cache, ec)) continue;
    bool all_done = !pending(dir, ref, false);
    for (auto& r : spec.runs)
      if (r.reference_id == ref.run_id) all_done = all_done && !pending(dir, r, false);
    if (!all_done) continue;
    const double size = double(fs::file_size(cache, ec));
    if (fs::remove(cache, ec))
      std::printf("[cachelab] removed the reference cache %s (%s): every run measured against it is done\n",
                  cache.c_str(), fmt_bytes(size).c_str());
  }
}

// After a write failed for want of space: the index lists what finished; exit 1.
int stop_out_of_space(const std::string& dir, const std::vector<std::string>& ids) {
  try {
    write_index_csv(dir, ids);
  } catch (const Error&) {
  }
  std::fprintf(stderr, "error: out of space: %s; finished runs are kept; free space (or raise the limit) and re-run "
                       "the same command to resume\n", out_of_space().c_str());
  return 1;
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
    n += r.artefacts.empty() ? session.calibrate(r, written) : session.make_artefacts(r);
  }
  std::printf("[cachelab] calibrated %d run(s) of `%s`\n", n, spec.name.c_str());
  return n;
}

void preflight_experiment(const ExperimentSpec& spec, const SweepOptions& o) {
  RunSession session(spec, o);
  for (auto& r : spec.runs) session.prepare(r);
  for (auto& r : spec.references) session.prepare(r);
  std::vector<size_t> all;
  for (size_t i = 0; i < spec.runs.size(); ++i)
    if (selected_by(spec.runs[i].name, o.only)) all.push_back(i);
  check_resources(session, spec, o, all);
}

int execute_experiment(const ExperimentSpec& spec, const SweepOptions& o) {
  // A worker dies with its parent (a killed sweep leaves no orphans running).
  if (o.worker >= 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    CL_CHECK(getppid() != 1, "worker started without a parent process");
  }
  clear_out_of_space();
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
  const std::vector<std::string> ids = index_ids(spec);
  double estimated_memory = 0;
  if (!is_worker) {
    // Only what provably belongs to dead processes of this host and PID namespace.
    remove_dead_temporaries(session.dir());
    remove_dead_temporaries(session.dir() + "/.cache");
    std::printf("%s\n", session.system_line().c_str());
    std::printf("[cachelab] experiment `%s`: %zu run(s) + %zu reference(s) -> %s\n", spec.name.c_str(), chosen.size(),
                spec.references.size(), session.dir().c_str());
    try {
      estimated_memory = check_resources(session, spec, o, chosen);
    } catch (const Error&) {
      if (interrupted()) return stop_interrupted(session.dir(), spec);  // stopped while measuring
      throw;
    }
    write_experiment_file(session.dir(), spec.name, spec.config_yaml, [&] {
      std::vector<std::string> v;
      for (auto& r : spec.runs) v.push_back(r.name);
      return v;
    }(), spec.claims_json, source);
  }
  int failures = 0;
  // One attempt at a run: a run whose lock (or whose reference's) another process holds is
  // left to it and waited for at the end, never done twice.
  auto attempt = [&](const RunSpec& r, bool after_wait) {
    RunOutcome out = RunOutcome::Failed;
    try {
      out = session.execute(r, after_wait);
      if (out == RunOutcome::Done && r.is_reference && !session.reference(r)) out = RunOutcome::Busy;
    } catch (const Error& e) {
      std::printf("  %-28s FAILED: %s\n", r.name.c_str(), e.what());
    }
    failures += out == RunOutcome::Failed;
    return out;
  };
  // Waits for the runs other processes hold; takes over those whose lease expired.
  auto wait_for = [&](std::vector<const RunSpec*> busy) {
    if (busy.empty()) return;
    std::string names;
    for (auto* r : busy) names += (names.empty() ? "" : ", ") + r->name;
    std::printf("%s[cachelab] waiting for %zu run(s) in progress in other processes: %s\n",
                is_worker ? ("[worker " + std::to_string(o.worker) + "] ").c_str() : "", busy.size(), names.c_str());
    while (!busy.empty() && !interrupted() && out_of_space().empty()) {
      for (int i = 0; i < 10 && !interrupted(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::vector<const RunSpec*> still;
      for (auto* r : busy)
        if (!interrupted() && attempt(*r, true) == RunOutcome::Busy) still.push_back(r);
      busy.swap(still);
    }
  };
  // References first, in this process: workers then load them from the cache.
  if (!is_worker) {
    std::vector<const RunSpec*> busy;
    for (auto& r : spec.references) {
      bool needed = false;
      for (size_t i : chosen) needed |= spec.runs[i].reference_id == r.run_id;
      needed |= spec.runs.empty();  // an experiment of references only
      if (o.reference >= 0) needed = r.run_id == spec.references[size_t(o.reference)].run_id;
      if (!needed) continue;
      if (attempt(r, false) == RunOutcome::Busy) busy.push_back(&r);
      if (interrupted()) return stop_interrupted(session.dir(), spec);
      if (!out_of_space().empty()) return stop_out_of_space(session.dir(), ids);
    }
    wait_for(busy);
    if (interrupted()) return stop_interrupted(session.dir(), spec);
    if (!out_of_space().empty()) return stop_out_of_space(session.dir(), ids);
  }
  if (o.jobs > 1 && !is_worker) {
    const int total = int(std::thread::hardware_concurrency());
    failures += spawn_workers(spec, o, std::max(1, total));
  } else {
    const auto t0 = std::chrono::steady_clock::now();
    size_t done = 0;
    std::vector<const RunSpec*> busy;
    for (size_t i : chosen) {
      const RunSpec& run = spec.runs[i];
      if (attempt(run, false) == RunOutcome::Busy) busy.push_back(&run);
      if (interrupted()) return is_worker ? 128 + interrupted() : stop_interrupted(session.dir(), spec);
      if (!out_of_space().empty()) return is_worker ? 1 : stop_out_of_space(session.dir(), ids);
      ++done;
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%s[%zu/%zu] elapsed %s, ETA %s\n", is_worker ? ("[worker " + std::to_string(o.worker) + "] ").c_str() : "",
                  done, chosen.size(), fmt_duration(el).c_str(),
                  fmt_duration(el / double(done) * double(chosen.size() - done)).c_str());
      std::fflush(stdout);
      if (!is_worker) write_index_csv(session.dir(), ids);
    }
    wait_for(busy);
    if (interrupted()) return is_worker ? 128 + interrupted() : stop_interrupted(session.dir(), spec);
    if (!out_of_space().empty()) return is_worker ? 1 : stop_out_of_space(session.dir(), ids);
  }
  if (!is_worker) {
    const int stale = write_index_csv(session.dir(), ids);
    if (stale > 0)
      std::printf("[cachelab] %d run file(s) in %s are from an earlier version of this experiment (another config, "
                  "weights or calibration): kept on disk, left out of the index and the report\n",
                  stale, session.dir().c_str());
    prune_reference_caches(session.dir(), spec);
    // The preflight's memory estimate against what this process held at its peak (one process:
    // with --jobs the runs' memory is in the workers).
    if (estimated_memory > 0 && o.jobs <= 1 && peak_resident_bytes() > 0)
      std::printf("[cachelab] memory: peak resident %s, preflight estimated ~%s\n", fmt_bytes(peak_resident_bytes()).c_str(),
                  fmt_bytes(estimated_memory).c_str());
    std::printf("[cachelab] %s: %d failure(s); index: %s/index.csv; report: cachelab report %s\n",
                failures ? "finished with errors" : "all runs done", failures, session.dir().c_str(),
                session.dir().c_str());
  }
  return failures ? 1 : 0;
}

}  // namespace cachelab
