// The cachelab command line. Library code throws cachelab::Error; only this file prints
// errors and picks exit codes (0 ok, 1 some run failed, 2 bad input).
#include <boost/program_options.hpp>
#include <hdf5.h>

#include <algorithm>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <signal.h>
#include <unistd.h>

#include "framework/config.h"
#include "framework/error.h"
#include "framework/interrupt.h"
#include "framework/experiment.h"
#include "framework/lm_decoder.h"
#include "framework/registries.h"
#include "framework/session.h"
#include "framework/slurm.h"
#include "framework/system_info.h"
#include "tools/components.h"
#include "framework/paths.h"
#include "tools/decode_command.h"
#include "tools/encode_command.h"
#include "tools/fid_command.h"
#include "tools/schedule_command.h"
#include "tools/train_command.h"

namespace po = boost::program_options;
using namespace cachelab;

namespace {

const char* kUsage = R"(cachelab -- feature caching laboratory for diffusion models

usage:
  cachelab list                              every registered component, its keys and defaults
  cachelab run EXP.yaml [key=value ...]      run an experiment (reference + variants)
  cachelab sweep EXP.yaml [key=value ...]    the same, with --jobs N / --index i for clusters
  cachelab sweep EXP.yaml --slurm [...]      submit to Slurm as job arrays (references first); --collect: index + what is missing
  cachelab validate EXP.yaml [key=value ...] check the config and list the runs, run nothing
  cachelab calibrate EXP.yaml [key=value ...] fit the variants' correctors / quantizers, write their files
  cachelab train CFG.yaml [key=value ...]    train a bundled model (resumable)
  cachelab profile EXP.yaml [key=value ...]  drift and reuse error per step and site of the reference (--help)
  cachelab schedule PROFILE.h5 --computes K --output F   a cache schedule from a profile (--method dp|uniform)
  cachelab report results/EXPERIMENT         write results/EXPERIMENT/report/index.html (--check: gate on claims;
                                             --summary / --compare: a committed summary; --perturbed: fragile claims)
  cachelab export results/EXPERIMENT         tidy tables: --level run|step|site, --format csv|parquet
  cachelab decode RUN.h5|results/EXP --vae F  saved latent samples -> uint8 images in .npz (arr_0) for the ADM evaluator
  cachelab fid SAMPLES.npz REFERENCE.npz --inception F   FID, Inception Score, precision / recall (pytorch-fid's Inception)
  cachelab encode-prompts --prompts F ...    prompts -> CLIP text embeddings for SD 1.x (a prompt file; --help)
  cachelab info                              cores, threads, BLAS, LibTorch, HDF5, data folder, bundled weights

environment: CACHELAB_ROOT (project root: configs/, models/weights/; default the source checkout),
             CACHELAB_DATA (datasets; default <root>/data), CACHELAB_DEBUG=1 (source locations in errors),
             CACHELAB_LEASE_S (run lock lease, default 300), CACHELAB_KEEP_CACHE=1 (keep reference caches)

options (`cachelab COMMAND --help` shows one command's own):
)";

// Each command's usage line and the options it reads (shown by `cachelab COMMAND --help`).
struct CommandHelp {
  const char* usage;
  std::vector<std::string> options;
};
const std::map<std::string, CommandHelp>& command_help() {
  static const std::map<std::string, CommandHelp> help = {
      {"list", {"cachelab list [--markdown]\n  every registered component, its config keys and defaults", {"markdown"}}},
      {"run",
       {"cachelab run EXP.yaml [key=value ...]\n  run an experiment: its references, then every variant x sweep point "
        "(finished runs are skipped)",
        {"jobs", "index", "only", "threads", "results", "force", "count", "max-hours", "allow-long"}}},
      {"sweep",
       {"cachelab sweep EXP.yaml [key=value ...]\n  the same as run; --index i runs one grid point (a cluster array "
        "task), --jobs N runs N worker processes",
        {"jobs", "index", "only", "threads", "results", "force", "count", "max-hours", "allow-long", "slurm", "partition", "time",
         "cpus-per-task", "mem", "sbatch-arg", "dry-run", "collect", "reference"}}},
      {"validate",
       {"cachelab validate EXP.yaml [key=value ...]\n  check the config, the files it reads and the cost, list the "
        "runs; run nothing",
        {"only", "threads", "results", "count", "ids", "max-hours", "allow-long"}}},
      {"calibrate",
       {"cachelab calibrate EXP.yaml [key=value ...]\n  fit the variants' correctors / quantizers and write their files",
        {"only", "threads", "results"}}},
      {"train", {"cachelab train CFG.yaml [key=value ...]\n  train a bundled model (resumable)", {}}},
      {"report",
       {"cachelab report results/EXPERIMENT [--check] [--summary F] [--compare F] [--perturbed [LABEL=]DIR ...]\n"
        "  write results/EXPERIMENT/report/index.html and its figures; print every claim's verdict",
        {"check", "summary", "compare", "perturbed"}}},
      {"export",
       {"cachelab export results/EXPERIMENT [--level run|step|site] [--format csv|parquet] [--output FILE]\n  tidy "
        "long-format tables of the experiment's runs",
        {"level", "format", "output"}}},
      {"decode",
       {"cachelab decode RUN.h5|results/EXPERIMENT --vae FILE [--output F] [--samples x|reference] [--threads N]\n"
        "  decode a run's saved latent samples with the SD VAE into uint8 NHWC images in an .npz (arr_0), as DiT's "
        "sample_ddp.py writes them for the ADM evaluator (a folder: every done run, into <folder>/npz/)",
        {"vae", "output", "samples", "threads"}}},
      {"fid",
       {"cachelab fid SAMPLES.npz REFERENCE.npz --inception FILE [--batch N] [--threads N] [--output F.json]\n"
        "  FID, Inception Score and precision / recall (k = 3) of uint8 NHWC images (arr_0, as `decode` writes them) "
        "against a reference batch (e.g. ADM's VIRTUAL_imagenet256_labeled.npz), on pytorch-fid's InceptionV3; "
        "the reference's features are cached beside it",
        {"inception", "batch", "threads", "output"}}},
      {"info", {"cachelab info [--threads N]\n  cores, threads, BLAS, LibTorch, HDF5, data folder, bundled weights",
                {"threads", "results"}}},
  };
  return help;
}

// `cachelab COMMAND --help`: its usage and only the options it reads.
void print_command_help(const std::string& command, const po::options_description& visible) {
  const CommandHelp& h = command_help().at(command);
  po::options_description own("options");
  for (auto& opt : visible.options())
    if (opt->long_name() == "help" ||
        std::find(h.options.begin(), h.options.end(), opt->long_name()) != h.options.end())
      own.add(opt);
  std::cout << "usage: " << h.usage << "\n\n" << own << "\n";
}

template <class Reg>
void list_registry(const Reg& reg, bool markdown) {
  if (markdown) {
    std::printf("| %s | key | type | default | meaning |\n|---|---|---|---|---|\n", reg.kind().c_str());
    for (auto& [name, e] : reg.entries()) {
      std::printf("| `%s` | | | | %s |\n", name.c_str(), e.description.c_str());
      for (auto& k : e.keys)
        std::printf("| | `%s` | %s | `%s` | %s |\n", k.key.c_str(), k.type.c_str(), k.default_value.c_str(),
                    k.doc.c_str());
    }
    std::printf("\n");
    return;
  }
  std::printf("%ss:\n", reg.kind().c_str());
  for (auto& [name, e] : reg.entries()) {
    std::printf("  %-10s %s\n", name.c_str(), e.description.c_str());
    for (auto& k : e.keys)
      std::printf("      %-20s %-12s %-14s %s\n", k.key.c_str(), k.type.c_str(), k.default_value.c_str(), k.doc.c_str());
  }
  std::printf("\n");
}

void split_args(const std::vector<std::string>& pos, std::string* file, std::vector<std::string>* overrides) {
  for (auto& a : pos) {
    if (a.find('=') != std::string::npos) overrides->push_back(a);
    else {
      CL_CHECK(file->empty(), "unexpected argument `" << a << "`: give one config file, then key=value overrides");
      *file = a;
    }
  }
  CL_CHECK(!file->empty(), "missing the experiment/config file argument");
}

std::string self_exe(const char* argv0) {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(argv0) : p.string();
}

int run_cli(int argc, char** argv) {
  register_components();
  // Subcommands with their own options.
  if (argc > 1 && (std::string(argv[1]) == "profile" || std::string(argv[1]) == "schedule"))
    return schedule_commands(argc, argv);
  if (argc > 1 && std::string(argv[1]) == "encode-prompts") return encode_prompts_command(argc, argv);
  // `cachelab help profile` = `cachelab profile --help` (their options live with them).
  if (argc > 2 && std::string(argv[1]) == "help" &&
      (std::string(argv[2]) == "profile" || std::string(argv[2]) == "schedule")) {
    char help[] = "--help";
    char* args[] = {argv[0], argv[2], help, nullptr};
    return schedule_commands(3, args);
  }
  po::options_description opts;
  std::string results = "results";
  std::vector<std::string> only;
  int jobs = 1, index = -1, worker = -1, workers = 1, threads = 0, reference = -1;
  SlurmOptions slurm;
  double max_hours = 24;
  std::string level = "run", format = "csv", output;
  std::string summary_file, compare_file;
  std::string vae_file, which_samples = "x", inception_file;
  int batch = 50;
  std::vector<std::string> perturbed;
  opts.add_options()("help,h", "this help")("jobs,j", po::value(&jobs), "parallel worker processes (default 1)")(
      "index", po::value(&index), "run only grid point i (a Slurm array task)")(
      "only", po::value(&only), "run only this variant (repeatable)")(
      "threads", po::value(&threads), "intra-op threads (overrides run.threads)")(
      "results", po::value(&results), "results root folder (default results/)")(
      "force", "redo runs that are already done")(
      "max-hours", po::value(&max_hours), "run/validate: refuse a sweep estimated longer (default 24; 0 = no limit)")(
      "allow-long", "run/validate: accept a sweep however long it is estimated to take")("check", "report: exit 1 unless every claim holds")(
      "summary", po::value(&summary_file), "report: write the experiment's summary (metrics, verdicts, where it ran) as JSON")(
      "compare", po::value(&compare_file),
      "report: print every number and verdict beside a committed summary (docs/summaries/); exit 1 when a verdict changed")(
      "perturbed", po::value(&perturbed),
      "report: [LABEL=]DIR, the same experiment run under a perturbation (threads, BLAS kernel, calibration seed); "
      "claims whose verdict changes there are reported fragile (repeatable)")(
      "level", po::value(&level), "export: run | step | site (default run)")(
      "format", po::value(&format), "export: csv | parquet (default csv)")(
      "output", po::value(&output), "export / decode / fid: output file (export default <folder>/export_<level>.<format>)")("count", "print the number of runs and exit")(
      "ids", "validate: print each run's name and run id (references first), check nothing else and exit")(
      "markdown", "list: print markdown tables (as in the README)")(
      "slurm", "sweep: submit as Slurm job arrays (the references first, then the runs after them)")(
      "partition", po::value(&slurm.partition), "--slurm: partition")("time", po::value(&slurm.time), "--slurm: time limit per task")(
      "cpus-per-task", po::value(&slurm.cpus_per_task), "--slurm: cores per task (also its --threads)")(
      "mem", po::value(&slurm.mem), "--slurm: memory per task (e.g. 4G)")(
      "sbatch-arg", po::value(&slurm.sbatch_args), "--slurm: one more #SBATCH line, e.g. --sbatch-arg=--account=A (repeatable)")(
      "dry-run", "--slurm: print the scripts, submit nothing")(
      "collect", "sweep: write index.csv from the finished runs, list the rest; exit 0 all done, 1 some failed, 4 some missing or in progress")(
      "reference", po::value(&reference), "run only reference i (a --slurm references task)")(
      "vae", po::value(&vae_file), "decode: the SD VAE weights (diffusers or CompVis layout, safetensors)")(
      "samples", po::value(&which_samples), "decode: x (the run's samples, default) | reference (its reference's)")(
      "inception", po::value(&inception_file), "fid: pytorch-fid's InceptionV3 weights (tools/convert_inception.py)")(
      "batch", po::value(&batch), "fid: images per Inception forward (default 50)");
  po::options_description hidden;  // parsed, never shown
  std::string command;
  std::vector<std::string> positional;
  hidden.add_options()("command", po::value(&command))("args", po::value(&positional))(
      "worker", po::value(&worker), "(internal) worker index")("workers", po::value(&workers), "(internal)");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("command", 1).add("args", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    CL_FAIL(e.what() << " (see `cachelab --help`)");
  }
  CL_CHECK(!vm.count("jobs") || jobs >= 1, "--jobs " << jobs << ": give at least 1 worker process");
  CL_CHECK(!vm.count("index") || index >= 0, "--index " << index << ": grid points are numbered from 0");
  CL_CHECK(!vm.count("threads") || threads >= 1, "--threads " << threads << ": give at least 1 thread");
  CL_CHECK(!vm.count("reference") || reference >= 0, "--reference " << reference << ": references are numbered from 0");
  CL_CHECK(!vm.count("reference") || !vm.count("index"), "give --index or --reference, not both");
  CL_CHECK(!vm.count("cpus-per-task") || slurm.cpus_per_task >= 1, "--cpus-per-task " << slurm.cpus_per_task << ": give at least 1");
  slurm.dry_run = vm.count("dry-run") > 0;
  for (const char* k : {"partition", "time", "cpus-per-task", "mem", "sbatch-arg", "dry-run"})
    CL_CHECK(!vm.count(k) || vm.count("slurm"), "--" << k << " goes with `cachelab sweep EXP --slurm`");
  if (command == "help" && !positional.empty() && command_help().count(positional[0])) {
    print_command_help(positional[0], opts);  // `cachelab help run`
    return 0;
  }
  if (vm.count("help") && command_help().count(command)) {
    print_command_help(command, opts);
    return 0;
  }
  if (vm.count("help") || command.empty() || command == "help") {
    std::cout << kUsage << opts << "\n";
    return command.empty() && !vm.count("help") ? 2 : 0;
  }
  if (command == "list") {
    const bool md = vm.count("markdown") > 0;
    list_registry(backbones(), md);
    list_registry(samplers(), md);
    list_registry(pipelines(), md);
    list_registry(guidances(), md);
    list_registry(caches(), md);
    list_registry(ops_layers(), md);
    list_registry(metrics(), md);
    list_registry(evaluators(), md);
    list_registry(decoders(), md);
    list_registry(lm_decoders(), md);
    list_registry(schedulers(), md);
    list_registry(router_trainers(), md);
    return 0;
  }
  if (command == "info") {
    std::printf("%s\n", describe(system_info(threads > 0 ? threads : 1)).c_str());
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    std::printf("cores        %u\nHDF5         %u.%u.%u\n", std::thread::hardware_concurrency(), maj, min, rel);
    std::printf("project root %s%s\n", project_root().c_str(),
                std::getenv("CACHELAB_ROOT") ? "  (CACHELAB_ROOT)" : "");
    const std::string data = default_data_dir();
    std::printf("data folder  %s%s%s\n", data.c_str(), std::getenv("CACHELAB_DATA") ? "  (CACHELAB_DATA)" : "",
                std::filesystem::exists(data + "/mnist/t10k-images-idx3-ubyte") ? ""
                                                                                : "  (MNIST missing: bash tools/fetch_data.sh)");
    // Reference trajectories cached for the variants of unfinished experiments.
    double cache_bytes = 0;
    int cache_files = 0;
    const std::string results_dir = resolve_path(results);
    std::error_code ec;
    for (auto& exp : std::filesystem::directory_iterator(results_dir, ec))
      for (auto& f : std::filesystem::directory_iterator(exp.path() / ".cache", ec))
        if (f.is_regular_file()) cache_bytes += double(f.file_size()), ++cache_files;
    std::printf("ref. caches  %s/*/.cache: %d file(s), %.1f MB (each removed once every run measured against it is "
                "done; safe to delete)\n", results_dir.c_str(), cache_files, cache_bytes / 1e6);
    std::printf("bundled weights:\n");
    for (auto& e : std::filesystem::directory_iterator(project_root() + "/models/weights")) {
      const auto p = e.path();
      if (p.extension() != ".safetensors") continue;
      std::printf("  %-40s %8.1f KB  digest %s\n", p.filename().c_str(), double(std::filesystem::file_size(p)) / 1024,
                  file_digest(p.string()).c_str());
    }
    return 0;
  }
  if (command == "calibrate") {
    std::string file;
    std::vector<std::string> overrides;
    split_args(positional, &file, &overrides);
    ExperimentSpec spec = load_experiment(file, overrides, results);
    check_only(spec, only);
    SweepOptions so;
    so.results_root = results;
    so.threads = threads;
    so.only = only;
    CL_CHECK(calibrate_experiment(spec, so) > 0 || !only.empty(),
             "`" << file << "` has no variant with a calibratable component (a `dec` corrector, a quantizer)");
    return 0;
  }
  if (command == "run" || command == "sweep" || command == "validate") {
    std::string file;
    std::vector<std::string> overrides;
    split_args(positional, &file, &overrides);
    ExperimentSpec spec = load_experiment(file, overrides, results);
    check_only(spec, only);
    if (vm.count("count")) {
      size_t n = 0;
      for (auto& r : spec.runs) n += selected_by(r.name, only);
      std::printf("%zu\n", n);
      return 0;
    }
    if (command == "validate" && vm.count("ids")) {  // what summaries are matched on (tools/docs.py)
      for (auto& r : spec.references) std::printf("%s %s\n", r.name.c_str(), r.run_id.c_str());
      for (auto& r : spec.runs)
        if (selected_by(r.name, only)) std::printf("%s %s\n", r.name.c_str(), r.run_id.c_str());
      return 0;
    }
    if (command == "validate") {
      SweepOptions so;
      so.results_root = results;
      so.threads = threads;
      so.only = only;
      so.max_hours = vm.count("allow-long") ? 0 : max_hours;
      preflight_experiment(spec, so);
      std::printf("%s: ok -- %zu run(s), %zu reference(s)\n", file.c_str(), spec.runs.size(), spec.references.size());
      std::map<std::string, const Artefact*> artefacts;  // made on demand (framework/artefacts.h)
      for (auto& r : spec.runs)
        for (auto& a : r.artefacts) artefacts.emplace(a.path, &a);
      int absent = 0;
      std::map<std::string, int> kinds;  // calibration, schedule, router
      for (auto& kv : artefacts) absent += !std::filesystem::is_regular_file(resolve_path(kv.first)), ++kinds[kv.second->kind];
      std::string counts;
      for (auto& [kind, n] : kinds)
        counts += (counts.empty() ? "" : ", ") + std::to_string(n) + " " + (kind == "calibration" ? "calibration file" : kind) + (n > 1 ? "s" : "");
      if (!artefacts.empty())
        std::printf("  artefacts: %s; %d to be made by `run` when a run first needs one, under %s/artefacts\n",
                    counts.c_str(), absent, results.c_str());
      for (size_t i = 0; i < spec.runs.size(); ++i)
        std::printf("  %3zu  %-28s %s  %s\n", i, spec.runs[i].name.c_str(), spec.runs[i].run_id.c_str(),
                    spec.runs[i].overrides.c_str());
      return 0;
    }
    SweepOptions so;
    so.results_root = results;
    so.jobs = std::max(1, jobs);
    so.index = index;
    so.worker = worker;
    so.workers = std::max(1, workers);
    so.threads = threads;
    so.force = vm.count("force") > 0;
    so.only = only;
    so.max_hours = vm.count("allow-long") ? 0 : max_hours;
    so.exe = self_exe(argv[0]);
    so.cli_overrides = overrides;
    so.reference = reference;
    if (vm.count("slurm") || vm.count("collect")) {
      CL_CHECK(command == "sweep", "--slurm and --collect go with `cachelab sweep`");
      CL_CHECK(!(vm.count("slurm") && vm.count("collect")), "give --slurm or --collect, not both");
      CL_CHECK(!vm.count("index") && !vm.count("reference") && !vm.count("jobs"),
               "--index, --reference and --jobs are for one process; --slurm makes one array task per run");
      return vm.count("slurm") ? submit_slurm(spec, so, slurm) : collect_experiment(spec, so);
    }
    return execute_experiment(spec, so);
  }
  if (command == "train") {
    std::string file;
    std::vector<std::string> overrides;
    split_args(positional, &file, &overrides);
    return train_command(file, overrides);
  }
  if (command == "decode") {
    CL_CHECK(positional.size() == 1, "usage: cachelab decode RUN.h5|results/EXPERIMENT --vae FILE [--output F]");
    CL_CHECK(which_samples == "x" || which_samples == "reference", "--samples must be x or reference, got `"
                                                                       << which_samples << "`");
    DecodeOptions d;
    d.vae = vae_file;
    d.output = output;
    d.reference = which_samples == "reference";
    d.threads = threads > 0 ? threads : 1;
    return decode_command(positional[0], d);
  }
  if (command == "fid") {
    CL_CHECK(positional.size() == 2, "usage: cachelab fid SAMPLES.npz REFERENCE.npz --inception FILE [--output F.json]");
    FidCommandOptions f;
    f.inception = inception_file;
    f.output = output;
    f.batch = batch;
    f.threads = threads > 0 ? threads : 1;
    return fid_command(positional[0], positional[1], f);
  }
  if (command == "export") {
    CL_CHECK(positional.size() == 1,
             "usage: cachelab export results/EXPERIMENT [--level run|step|site] [--format csv|parquet] [--output FILE]");
    CL_CHECK(std::filesystem::is_directory(positional[0]),
             "`" << positional[0] << "` is not a results folder (run an experiment first)");
    const std::string tool = project_root() + "/tools/export.py";
    std::vector<std::string> a = {"/usr/bin/python3", tool, positional[0], "--level", level, "--format", format};
    if (!output.empty()) a.insert(a.end(), {"--output", output});
    std::vector<const char*> args;
    for (auto& s : a) args.push_back(s.c_str());
    args.push_back(nullptr);
    execv(args[0], const_cast<char* const*>(args.data()));
    CL_FAIL("could not start /usr/bin/python3 for the export; run `bash tools/setup.sh` (python3-h5py, pandas)");
  }
  if (command == "report") {
    CL_CHECK(positional.size() == 1, "usage: cachelab report results/EXPERIMENT [--check] [--summary F] [--compare F] "
                                     "[--perturbed [LABEL=]DIR ...]");
    CL_CHECK(std::filesystem::is_directory(positional[0]),
             "`" << positional[0] << "` is not a results folder (run an experiment first)");
    const std::string tool = project_root() + "/tools/report.py";
    std::vector<std::string> a = {"/usr/bin/python3", tool, positional[0]};
    if (vm.count("check")) a.push_back("--check");
    if (!summary_file.empty()) a.insert(a.end(), {"--summary", summary_file});
    if (!compare_file.empty()) a.insert(a.end(), {"--compare", compare_file});
    for (auto& p : perturbed) a.insert(a.end(), {"--perturbed", p});
    std::vector<const char*> args;
    for (auto& x : a) args.push_back(x.c_str());
    args.push_back(nullptr);
    execv(args[0], const_cast<char* const*>(args.data()));
    CL_FAIL("could not start /usr/bin/python3 for the report; run `bash tools/setup.sh` (python3-h5py, matplotlib)");
  }
  const std::vector<std::string> commands = {"list",  "run",    "sweep",  "validate", "calibrate",
                                             "train", "report", "export", "info", "profile", "schedule", "decode",
                                             "encode-prompts", "fid"};
  CL_FAIL("unknown command `" << command << "`" << did_you_mean(command, commands) << "; see `cachelab --help`");
}

}  // namespace

int main(int argc, char** argv) {
  // HDF5 closes what is still open at exit; after a write failed (a full disk) that close
  // crashes inside the library. cachelab closes its files itself.
  H5dont_atexit();
  // Line-buffered output: a log redirected to a file (a Slurm job's) keeps every finished line.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  cachelab::install_interrupt_handlers();
  // A file-size limit (ulimit -f) fails the write with EFBIG, reported as a clean error,
  // instead of killing the process.
  signal(SIGXFSZ, SIG_IGN);
  try {
    return run_cli(argc, argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    if (const char* d = std::getenv("CACHELAB_DEBUG"); d && *d && *d != '0')
      std::fprintf(stderr, "  (%s)\n", e.origin().c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 3;
  }
}
