// Slurm submission and collection without a cluster: which tasks a submission asks for (only
// what is not done), the scripts' contents, a references task that runs no variant, the
// states --collect reports and its exit codes. tests/tools/test_slurm.sh runs them on a
// real single-node Slurm.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "framework/recorder.h"
#include "framework/session.h"
#include "framework/slurm.h"
#include "tests/test_util.h"

using namespace cachelab;
namespace fs = std::filesystem;

namespace {
const char* kExperiment = R"(name: s
backbone: {type: dit, input_size: 8, patch_size: 2, hidden_size: 32, depth: 4, num_heads: 2, weights: WEIGHTS}
sampler: {type: ddim, steps: 4}
run: {samples: 2, batch: 2, save_samples: 2, timing_reps: 1}
metrics: [mse]
variants:
  fora: {cache: {type: fora, interval: 2}}
  fb: {cache: {type: fbcache}}
)";

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

struct Fixture {
  cachelab::testing::TempDir d;
  ExperimentSpec spec;
  SweepOptions o;
  std::string dir;
  Fixture() {
    Dit m(cachelab::testing::tiny_dit_options());
    cachelab::testing::randomize(m);
    m.save(d.path + "/w.safetensors", {});
    std::string text = kExperiment;
    text.replace(text.find("WEIGHTS"), 7, d.path + "/w.safetensors");
    spec = load_experiment(d.file("e.yaml", text), {"run.cfg_scale=1"});
    o.results_root = d.path + "/results";
    o.exe = "/opt/cachelab bin/cachelab";  // a space: the scripts must quote it
    o.cli_overrides = {"run.cfg_scale=1"};
    dir = o.results_root + "/s";
  }
};
}  // namespace

BOOST_AUTO_TEST_SUITE(slurm)

BOOST_AUTO_TEST_CASE(array_ranges_compress_consecutive_indices) {
  BOOST_CHECK_EQUAL(array_ranges({}), "");
  BOOST_CHECK_EQUAL(array_ranges({3}), "3");
  BOOST_CHECK_EQUAL(array_ranges({0, 1, 2, 5, 7, 8}), "0-2,5,7-8");
  BOOST_CHECK_EQUAL(array_ranges({0, 2, 4}), "0,2,4");
}

BOOST_AUTO_TEST_CASE(a_submission_asks_only_for_what_is_not_done) {
  Fixture f;
  SlurmOptions s;
  s.partition = "gpu";
  s.time = "00:30:00";
  s.cpus_per_task = 3;
  s.mem = "2G";
  s.sbatch_args = {"--account=lab"};
  // Nothing has run: one references task, both runs, the scripts carry every option.
  SlurmPlan p = plan_slurm(f.spec, f.o, s);
  BOOST_CHECK_EQUAL(array_ranges(p.references), "0");
  BOOST_CHECK_EQUAL(array_ranges(p.runs), "0-1");
  for (const char* line : {"#SBATCH --array=0-1\n", "#SBATCH --partition=gpu\n", "#SBATCH --time=00:30:00\n",
                           "#SBATCH --cpus-per-task=3\n", "#SBATCH --mem=2G\n", "#SBATCH --account=lab\n",
                           "'/opt/cachelab bin/cachelab' 'sweep'", "'run.cfg_scale=1'", "'--threads' '3'",
                           "--index \"$SLURM_ARRAY_TASK_ID\"\n"})
    BOOST_CHECK_MESSAGE(p.runs_script.find(line) != std::string::npos, "missing `" << line << "` in\n" << p.runs_script);
  BOOST_CHECK(p.references_script.find("--reference \"$SLURM_ARRAY_TASK_ID\"\n") != std::string::npos);
  BOOST_CHECK(p.references_script.find("#SBATCH --array=0\n") != std::string::npos);
  BOOST_CHECK(p.runs_script.find("'--results' '" + fs::absolute(f.o.results_root).string() + "'") != std::string::npos);

  // A references task runs its reference and no variant.
  SweepOptions ref = f.o;
  ref.reference = 0;
  BOOST_REQUIRE_EQUAL(execute_experiment(f.spec, ref), 0);
  BOOST_CHECK(read_run_info(f.dir + "/" + f.spec.references[0].run_id + ".h5"));
  BOOST_CHECK(!fs::exists(f.dir + "/" + f.spec.runs[0].run_id + ".h5"));
  BOOST_CHECK(!fs::exists(f.dir + "/" + f.spec.runs[1].run_id + ".h5"));
  p = plan_slurm(f.spec, f.o, s);
  BOOST_CHECK(p.references.empty());
  BOOST_CHECK(p.references_script.empty());
  BOOST_CHECK_EQUAL(array_ranges(p.runs), "0-1");

  // Run 1 done: only run 0 is asked for.
  SweepOptions one = f.o;
  one.index = 1;
  BOOST_REQUIRE_EQUAL(execute_experiment(f.spec, one), 0);
  p = plan_slurm(f.spec, f.o, s);
  BOOST_CHECK_EQUAL(array_ranges(p.runs), "0");
  BOOST_CHECK(p.runs_script.find("#SBATCH --array=0\n") != std::string::npos);
  // --only narrows the tasks; the reference is needed again when its trace is gone.
  SweepOptions only = f.o;
  only.only = {"fb"};
  BOOST_CHECK(plan_slurm(f.spec, only, s).runs.empty());
  fs::remove_all(f.dir + "/.cache");
  BOOST_CHECK_EQUAL(array_ranges(plan_slurm(f.spec, f.o, s).references), "0");

  // An experiment of references only (no variant, no cache): one task per reference.
  std::string refs_only = kExperiment;
  refs_only = refs_only.substr(0, refs_only.find("variants:"));
  refs_only.replace(refs_only.find("WEIGHTS"), 7, f.d.path + "/w.safetensors");
  refs_only += "sweep: {seed: [0, 1, 2]}\n";
  const ExperimentSpec grid = load_experiment(f.d.file("r.yaml", refs_only), {});
  BOOST_REQUIRE_EQUAL(grid.references.size(), 3u);
  const SlurmPlan rp = plan_slurm(grid, f.o, s);
  BOOST_CHECK_EQUAL(array_ranges(rp.references), "0-2");
  BOOST_CHECK(rp.runs.empty() && rp.runs_script.empty());

  // --force would redo finished runs in every resubmission: refused.
  SweepOptions force = f.o;
  force.force = true;
  cachelab::testing::check_error([&] { plan_slurm(f.spec, force, s); }, {"--force"});
}

BOOST_AUTO_TEST_CASE(submit_without_sbatch_fails_clearly_and_dry_run_writes_nothing) {
  Fixture f;
  SlurmOptions s;
  s.dry_run = true;
  BOOST_CHECK_EQUAL(submit_slurm(f.spec, f.o, s), 0);
  BOOST_CHECK(!fs::exists(f.dir));
  s.dry_run = false;
  const std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  setenv("PATH", (f.d.path + "/nothing_here").c_str(), 1);
  cachelab::testing::check_error([&] { submit_slurm(f.spec, f.o, s); }, {"`sbatch` was not found", "--dry-run"});
  // A stand-in sbatch that logs its arguments, prints a warning and then a job id.
  const std::string bin = f.d.path + "/bin", calls = f.d.path + "/calls.txt";
  fs::create_directories(bin);
  std::ofstream(bin + "/sbatch") << "#!/bin/sh\necho \"$@\" >> " << calls
                                 << "\necho 'sbatch: warning: a warning'\nn=$(wc -l < " << calls
                                 << ")\necho \"$((41 + n));cluster\"\n";
  fs::permissions(bin + "/sbatch", fs::perms::owner_all);
  setenv("PATH", (bin + ":" + path).c_str(), 1);
  BOOST_CHECK_EQUAL(submit_slurm(f.spec, f.o, s), 0);
  std::ifstream in(calls);
  std::string refs, runs;
  std::getline(in, refs);
  std::getline(in, runs);
  BOOST_CHECK_EQUAL(refs, "--parsable " + f.dir + "/slurm/references.sbatch");
  BOOST_CHECK_EQUAL(runs, "--parsable --dependency=afterany:42 " + f.dir + "/slurm/runs.sbatch");
  BOOST_CHECK(fs::is_directory(f.dir + "/slurm/logs"));
  std::ifstream log(f.dir + "/slurm/submissions.txt");
  const std::string logged((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  BOOST_CHECK_MESSAGE(logged.find("references 42 [0] runs 43 [0-1]") != std::string::npos, logged);
  // sbatch refusing: its message in the error.
  std::ofstream(bin + "/sbatch") << "#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu'\nexit 1\n";
  cachelab::testing::check_error([&] { submit_slurm(f.spec, f.o, s); }, {"sbatch refused", "invalid partition"});
  setenv("PATH", path.c_str(), 1);
}

BOOST_AUTO_TEST_CASE(collect_reports_states_and_exit_codes) {
  Fixture f;
  // Nothing has run: exit 4, no folder created.
  BOOST_CHECK_EQUAL(collect_experiment(f.spec, f.o), kCollectIncomplete);
  BOOST_CHECK(!fs::exists(f.dir));
  SweepOptions one = f.o;
  one.index = 0;
  BOOST_REQUIRE_EQUAL(execute_experiment(f.spec, one), 0);
  const std::string missing = f.spec.runs[1].run_id;
  BOOST_CHECK(run_state(f.dir, f.spec.runs[0].run_id) == RunState::Done);
  BOOST_CHECK(run_state(f.dir, missing) == RunState::Missing);
  BOOST_CHECK_EQUAL(collect_experiment(f.spec, f.o), kCollectIncomplete);
  // A temporary file of a task writing it: in progress, still incomplete.
  std::ofstream(f.dir + "/" + missing + ".h5.tmp.node7.123.abc") << "x";
  BOOST_CHECK(run_state(f.dir, missing) == RunState::InProgress);
  BOOST_CHECK_EQUAL(collect_experiment(f.spec, f.o), kCollectIncomplete);
  fs::remove(f.dir + "/" + missing + ".h5.tmp.node7.123.abc");
  // A failed run: every run finished, exit 1.
  {
    RunMeta meta;
    meta.run_id = missing;
    meta.experiment = "s";
    meta.variant = "fb";
    RunWriter w(f.dir + "/" + missing + ".h5", meta, SiteTable{});
    w.finish_failed("NaN in the sample", 2);
  }
  BOOST_CHECK(run_state(f.dir, missing) == RunState::Failed);
  BOOST_CHECK_EQUAL(collect_experiment(f.spec, f.o), 1);
  // Done: exit 0, the index lists the reference and both runs once each.
  fs::remove(f.dir + "/" + missing + ".h5");
  BOOST_REQUIRE_EQUAL(execute_experiment(f.spec, f.o), 0);
  BOOST_CHECK_EQUAL(collect_experiment(f.spec, f.o), 0);
  std::ifstream in(f.dir + "/index.csv");
  std::string line, first_fields;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) first_fields += line.substr(0, line.find(',')) + "\n";
  BOOST_CHECK_EQUAL(count(first_fields, "\n"), 3u);
  for (const std::string& id : {f.spec.references[0].run_id, f.spec.runs[0].run_id, missing})
    BOOST_CHECK_EQUAL(count(first_fields, id + "\n"), 1u);
}

BOOST_AUTO_TEST_SUITE_END()
