#include "framework/artefacts.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "framework/error.h"
#include "framework/experiment_detail.h"
#include "framework/interrupt.h"
#include "framework/lock.h"
#include "framework/paths.h"
#include "framework/profile.h"
#include "framework/registries.h"
#include "framework/router_trainer.h"
#include "framework/schedule.h"
#include "framework/schedulers.h"
#include "framework/system_info.h"

namespace cachelab {
namespace fs = std::filesystem;

namespace {

bool present(const Artefact& a) {
  std::error_code ec;
  return fs::is_regular_file(resolve_path(a.path), ec);
}

const RunSpec& maker_of(const ExperimentSpec& spec, const Artefact& a) {
  for (auto& r : spec.runs)
    if (r.name == a.maker) return r;
  CL_FAIL("artefact `" << a.path << "` names maker run `" << a.maker << "`, which `" << spec.file << "` does not have");
}

std::string describe(const Artefact& a, const RunSpec& maker) {
  const ConfigNode& c = maker.calibration_config;
  const ConfigNode* run = c.find("run");
  auto get = [&](const ConfigNode* n, const char* k) { return n && n->find(k) ? n->find(k)->scalar : std::string("?"); };
  std::ostringstream s;
  s << "artefact `" << a.path << "` (the calibration file `" << a.name << "`, fitted on run `" << maker.name
    << "` with seed " << get(&c, "seed") << ", " << get(run, "samples") << " samples)";
  return s.str();
}

// Takes the lock of every artefact in `todo`, waiting while another process holds one.
std::vector<std::unique_ptr<RunLock>> lock_all(const std::vector<const Artefact*>& todo) {
  std::vector<std::unique_ptr<RunLock>> locks;
  for (const Artefact* a : todo) {
    const std::string path = resolve_path(a->path) + ".lock";
    fs::create_directories(fs::path(path).parent_path());
    bool said = false;
    while (true) {
      std::string holder;
      if (auto l = RunLock::try_acquire(path, &holder)) {
        locks.push_back(std::move(l));
        break;
      }
      if (!said) std::printf("[cachelab] waiting for artefact %s, made by another process (%s)\n", a->path.c_str(), holder.c_str());
      said = true;
      std::fflush(stdout);
      for (int i = 0; i < 10; ++i) {
        throw_if_interrupted();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
  return locks;
}

void write_note(const std::string& artefact_path, const nlohmann::json& note) {
  write_text_file(resolve_path(artefact_path) + ".json", note.dump(1) + "\n", "the artefact's note");
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A scheduler's schedule: the profile first (shared by every scheduler reading it), then the
// maker (framework/schedulers.h) on it.
int make_schedule(const ExperimentSpec& spec, const Artefact& a, const FitArtefacts& fit) {
  const auto lock = lock_all({&a});
  if (present(a)) return 0;
  const ConfigNode& profile = *a.recipe.find("profile");
  const std::string profile_path = profile.find("path")->scalar;
  const ConfigNode& ref = *a.recipe.find("reference");
  auto describe_this = [&] {
    return "schedule `" + a.path + "` (" + to_yaml(*a.recipe.find("scheduler")) + ") from a profile of run `" + a.maker +
           "`'s reference with seed " + ref.find("seed")->scalar + ", " + profile.find("profile_samples")->scalar +
           " samples";
  };
  int made = 0;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    Artefact p;
    p.path = profile_path;
    const auto profile_lock = lock_all({&p});
    if (!present(p)) {
      RunSpec reference;
      reference.name = "reference of " + a.maker;
      reference.config = ref;
      std::printf("[cachelab] making the profile %s (reference of `%s`, seed %s, %s samples)\n", p.path.c_str(),
                  a.maker.c_str(), ref.find("seed")->scalar.c_str(), profile.find("profile_samples")->scalar.c_str());
      std::fflush(stdout);
      ProfileOptions po;
      po.samples = std::stoi(profile.find("profile_samples")->scalar);
      po.lags = std::stoi(profile.find("profile_lags")->scalar);
      for (auto& r : profile.find("profile_rates")->seq) po.rates.push_back(std::stod(r.scalar));
      fit.profile(reference, po, resolve_path(p.path));
      write_note(p.path, {{"kind", "profile"}, {"maker", a.maker}, {"experiment", spec.name},
                          {"seed", ref.find("seed")->scalar}, {"seconds", seconds_since(t0)}, {"created_utc", utc_now_iso()}});
      ++made;
    }
    const auto maker = schedulers().build(*a.recipe.find("scheduler"));
    std::string summary;
    const Schedule s = maker->make(read_profile(resolve_path(p.path)), p.path, &summary);
    save_schedule(s, resolve_path(a.path));
    std::printf("[cachelab] made %s: %s\n", a.path.c_str(), summary.c_str());
  } catch (const Error& e) {
    CL_FAIL("making the " << describe_this() << " failed: " << e.what());
  }
  write_note(a.path, {{"kind", "schedule"}, {"name", a.name}, {"path", a.path}, {"identity", a.identity},
                      {"maker", a.maker}, {"experiment", spec.name}, {"seed", ref.find("seed")->scalar},
                      {"samples", profile.find("profile_samples")->scalar}, {"profile", profile_path},
                      {"seconds", seconds_since(t0)}, {"created_utc", utc_now_iso()}});
  std::fflush(stdout);
  return made + 1;
}

// A router trained on demand (framework/router_trainer.h) for the maker run's backbone and sampler.
int make_router(const ExperimentSpec& spec, const Artefact& a) {
  const auto lock = lock_all({&a});
  if (present(a)) return 0;
  const ConfigNode& trainer = *a.recipe.find("trainer");
  std::printf("[cachelab] training the router %s for run `%s` (%s)\n", a.path.c_str(), a.maker.c_str(),
              detail::trimmed_yaml(trainer).c_str());
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    train_router(a.recipe, resolve_path(a.path));
  } catch (const Error& e) {
    CL_FAIL("training the router `" << a.path << "` of run `" << a.maker << "` (" << detail::trimmed_yaml(trainer)
                                    << ") failed: " << e.what());
  }
  write_note(a.path, {{"kind", "router"}, {"name", a.name}, {"path", a.path}, {"identity", a.identity},
                      {"maker", a.maker}, {"experiment", spec.name}, {"seed", trainer.find("seed")->scalar},
                      {"samples", trainer.find("trajectories")->scalar}, {"seconds", seconds_since(t0)},
                      {"created_utc", utc_now_iso()}});
  std::printf("[cachelab] made %s in %.0f s\n", a.path.c_str(), seconds_since(t0));
  std::fflush(stdout);
  return 1;
}

int make(const ExperimentSpec& spec, const Artefact& a, const FitArtefacts& fit, int depth) {
  if (present(a)) return 0;
  if (a.kind == "schedule") return make_schedule(spec, a, fit);
  if (a.kind == "router") return make_router(spec, a);
  const RunSpec& maker = maker_of(spec, a);
  CL_CHECK(depth < 64, "artefacts of `" << spec.file << "` depend on each other in a cycle at " << a.path);
  int made = 0;
  for (auto& dep : maker.artefacts)  // what its calibration run reads: routers, schedules, earlier runs' files
    if (dep.maker != maker.name || dep.kind != "calibration") made += make(spec, dep, fit, depth + 1);
  std::vector<const Artefact*> todo;
  for (auto& own : maker.artefacts)
    if (own.maker == maker.name && own.kind == "calibration" && !present(own)) todo.push_back(&own);
  const auto locks = lock_all(todo);
  todo.erase(std::remove_if(todo.begin(), todo.end(), [](const Artefact* x) { return present(*x); }), todo.end());
  if (todo.empty()) return made;  // made by the lock's last holder
  std::set<std::string> skip;
  for (auto& other : maker.artefacts)
    if (std::find(todo.begin(), todo.end(), &other) == todo.end()) skip.insert(resolve_path(other.path));
  RunSpec run;
  run.name = maker.name;
  run.config = maker.calibration_config;
  std::printf("[cachelab] making %s\n", describe(*todo.front(), maker).c_str());
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    fit.calibrate(run, skip);
  } catch (const Error& e) {
    CL_FAIL("making " << describe(*todo.front(), maker) << " failed: " << e.what());
  }
  const double seconds = seconds_since(t0);
  const ConfigNode& c = maker.calibration_config;
  nlohmann::json together = nlohmann::json::array();
  for (const Artefact* x : todo) together.push_back(x->path);
  for (const Artefact* x : todo) {
    CL_CHECK(present(*x), "the calibration run of `" << maker.name << "` did not write " << describe(*x, maker)
                                                      << "; is the file named by a calibratable component?");
    write_note(x->path, {{"kind", "calibration"},
                         {"name", x->name},
                         {"path", x->path},
                         {"identity", x->identity},
                         {"maker", maker.name},
                         {"experiment", spec.name},
                         {"seed", c.find("seed")->scalar},
                         {"samples", c.find("run")->find("samples") ? c.find("run")->find("samples")->scalar : ""},
                         {"seconds", seconds},
                         {"fitted_together", together},
                         {"created_utc", utc_now_iso()}});
    std::printf("[cachelab] made %s in %.1f s\n", x->path.c_str(), seconds);
    ++made;
  }
  std::fflush(stdout);
  return made;
}

}  // namespace

int ensure_artefacts(const ExperimentSpec& spec, const RunSpec& run, const FitArtefacts& fit) {
  int made = 0;
  for (auto& a : run.artefacts) made += make(spec, a, fit, 0);
  return made;
}

bool missing_artefacts(const RunSpec& run, const std::string& kind) {
  for (auto& a : run.artefacts)
    if ((kind.empty() || a.kind == kind) && !present(a)) return true;
  return false;
}

std::string artefacts_json(const RunSpec& run) {
  nlohmann::json out = nlohmann::json::array();
  for (auto& a : run.artefacts) {
    nlohmann::json j = {{"path", a.path}, {"name", a.name}, {"identity", a.identity}, {"maker", a.maker}};
    const std::string p = resolve_path(a.path);
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) j["digest"] = file_digest(p);
    std::ifstream side(p + ".json");
    if (side) {
      try {
        const auto s = nlohmann::json::parse(side);
        for (const char* k : {"seed", "samples", "seconds", "created_utc"})
          if (s.contains(k)) j[k] = s[k];
      } catch (const std::exception&) {
        // an unreadable note is left out: the artefact itself is recorded by its digest
      }
    }
    out.push_back(j);
  }
  return out.dump();
}

}  // namespace cachelab
