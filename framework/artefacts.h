// Artefacts made on demand: before a run starts, every artefact it reads that is missing
// (framework/experiment.h, Artefact) is fitted by its maker's calibration run (a schedule: by
// its scheduler from a profile of the reference, itself made once per profile), under a lock
// so that parallel processes (--jobs, Slurm tasks) never make one twice, what the maker
// itself reads from earlier makers first. Beside each artefact, <artefact>.json says what
// made it and how long it took. Torch-free: the calibration run is the caller's.
#pragma once
#include <functional>
#include <set>
#include <string>

#include "framework/experiment.h"
#include "framework/profile.h"

namespace cachelab {

// What makes them, given by the caller (the session: it holds the models).
struct FitArtefacts {
  // Runs a maker's calibration (`calibration_run.config` is its calibration config), writing
  // every calibration file of the run except those in `skip` (resolved paths).
  std::function<void(const RunSpec& calibration_run, std::set<std::string>& skip)> calibrate;
  // Profiles the uncached `reference` run into `path`.
  std::function<void(const RunSpec& reference, const ProfileOptions& options, const std::string& path)> profile;
};

// Whether an artefact of `run` (of `kind`, when given) is not made yet.
bool missing_artefacts(const RunSpec& run, const std::string& kind = "");

// Makes the missing artefacts of `run`; returns how many it made. An error names the
// artefact, the file the experiment wrote, its maker and the calibration settings.
int ensure_artefacts(const ExperimentSpec& spec, const RunSpec& run, const FitArtefacts& fit);

// The run's artefacts as a JSON array (each one's path, digest and what its <artefact>.json
// says: maker, calibration settings, seconds, when): what the run file records.
std::string artefacts_json(const RunSpec& run);

}  // namespace cachelab
