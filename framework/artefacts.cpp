#include "framework/artefacts.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "framework/error.h"
#include "framework/interrupt.h"
#include "framework/lock.h"
#include "framework/paths.h"
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

int make(const ExperimentSpec& spec, const Artefact& a, const FitArtefacts& fit, int depth) {
  if (present(a)) return 0;
  const RunSpec& maker = maker_of(spec, a);
  CL_CHECK(depth < 64, "artefacts of `" << spec.file << "` depend on each other in a cycle at " << a.path);
  int made = 0;
  for (auto& dep : maker.artefacts)  // what its calibration run reads, made by earlier runs
    if (dep.maker != maker.name) made += make(spec, dep, fit, depth + 1);
  std::vector<const Artefact*> todo;
  for (auto& own : maker.artefacts)
    if (own.maker == maker.name && !present(own)) todo.push_back(&own);
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
    fit(run, skip);
  } catch (const Error& e) {
    CL_FAIL("making " << describe(*todo.front(), maker) << " failed: " << e.what());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const ConfigNode& c = maker.calibration_config;
  nlohmann::json together = nlohmann::json::array();
  for (const Artefact* x : todo) together.push_back(x->path);
  for (const Artefact* x : todo) {
    CL_CHECK(present(*x), "the calibration run of `" << maker.name << "` did not write " << describe(*x, maker)
                                                      << "; is the file named by a calibratable component?");
    nlohmann::json side = {{"name", x->name},
                           {"path", x->path},
                           {"identity", x->identity},
                           {"maker", maker.name},
                           {"experiment", spec.name},
                           {"seed", c.find("seed")->scalar},
                           {"samples", c.find("run")->find("samples") ? c.find("run")->find("samples")->scalar : ""},
                           {"seconds", seconds},
                           {"fitted_together", together},
                           {"created_utc", utc_now_iso()}};
    const std::string path = resolve_path(x->path) + ".json", tmp = temp_path(path);
    {
      std::ofstream f(tmp);
      f << side.dump(1) << "\n";
      CL_CHECK(f.good(), "cannot write `" << tmp << "`");
    }
    fs::rename(tmp, path);
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
