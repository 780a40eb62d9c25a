// `cachelab profile` and `cachelab schedule`: profile a reference trajectory, then build
// cache schedules from the profile (framework/profile.h, framework/schedule.h).
#include "tools/schedule_command.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>

#include "framework/error.h"
#include "framework/experiment.h"
#include "framework/profile.h"
#include "framework/registries.h"
#include "framework/schedule.h"
#include "framework/schedulers.h"
#include "framework/site.h"
#include "framework/session.h"

namespace po = boost::program_options;

namespace cachelab {
namespace {

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

po::variables_map parse(int argc, char** argv, const po::options_description& opts, std::vector<std::string>& pos,
                        const char* usage) {
  po::options_description all;
  po::options_description hidden;
  hidden.add_options()("args", po::value(&pos));
  all.add(opts).add(hidden);
  po::positional_options_description p;
  p.add("args", -1);
  po::variables_map vm;
  try {
    // argv[1] is the subcommand.
    po::store(po::command_line_parser(argc - 1, argv + 1).options(all).positional(p).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    CL_FAIL(e.what() << " (see `" << usage << " --help`)");
  }
  return vm;
}

int profile_command(int argc, char** argv) {
  ProfileOptions o;
  std::string kinds, results = "results", rates;
  std::vector<std::string> only, pos;
  int threads = 0;
  po::options_description opts(
      "cachelab profile EXP.yaml [key=value ...]: profile the uncached reference trajectory of the experiment "
      "(drift and reuse error per step and site) into an HDF5 file");
  opts.add_options()("help,h", "this help")("lags", po::value(&o.lags)->default_value(3),
                                            "reuse error for lags 0..N steps")(
      "samples", po::value(&o.samples)->default_value(4), "samples profiled (one batch)")(
      "kinds", po::value(&kinds), "site kinds profiled, comma-separated (default: every site but the model)")(
      "no-pairwise", "skip the [site, step, step] distance table (saves memory on long trajectories)")(
      "rates", po::value(&rates),
      "token rates, comma-separated (e.g. 0.25,0.5,0.75): also measure the error when a token site recomputes only "
      "that fraction of its tokens (one extra forward per step, site and rate; for --method diffsparse)")(
      "only", po::value(&only), "profile the reference of this variant (repeatable)")(
      "output", po::value(&o.output), "output file (default <results>/<experiment>/profiles/<reference>.h5)")(
      "results", po::value(&results), "results root folder (default results/)")(
      "threads", po::value(&threads), "intra-op threads (overrides run.threads)");
  auto vm = parse(argc, argv, opts, pos, "cachelab profile");
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  CL_CHECK(o.lags >= 0 && o.lags <= 50, "--lags " << o.lags << ": give 0..50");
  CL_CHECK(o.samples >= 1, "--samples " << o.samples << ": give at least 1");
  CL_CHECK(!vm.count("threads") || threads >= 1, "--threads " << threads << ": give at least 1 thread");
  o.kinds = split_commas(kinds);
  for (auto& k : o.kinds) site_kind_from_name(k);  // an unknown kind fails here, naming the kinds
  o.pairwise = !vm.count("no-pairwise");
  for (auto& r : split_commas(rates)) {
    double v = -1;
    try {
      v = std::stod(r);
    } catch (const std::exception&) {
    }
    CL_CHECK(v > 0 && v < 1, "--rates: `" << r << "` is not a rate strictly between 0 and 1 (e.g. 0.25,0.5,0.75)");
    o.rates.push_back(v);
  }
  std::string file;
  std::vector<std::string> overrides;
  for (auto& a : pos) (a.find('=') != std::string::npos ? overrides.push_back(a) : void(file = a));
  CL_CHECK(!file.empty(), "usage: cachelab profile EXP.yaml [key=value ...] [--lags N] [--samples N] [--output F]");
  ExperimentSpec spec = load_experiment(file, overrides);
  check_only(spec, only);
  SweepOptions so;
  so.results_root = results;
  so.threads = threads;
  so.only = only;
  profile_experiment(spec, so, o);
  return 0;
}

int schedule_command(int argc, char** argv) {
  std::string method = "dp", kinds = "attn,mlp", cost = "feature", output;
  int computes = 0, min_len = 1, max_len = 0;
  double union_quantile = 0.5;
  std::vector<std::string> pos;
  po::options_description opts(
      "cachelab schedule PROFILE.h5 --computes K --output FILE.yaml: a cache schedule (which steps compute) for a "
      "`schedule` policy, built from a profile");
  opts.add_options()("help,h", "this help")("method", po::value(&method)->default_value("dp"),
                                            "dp (CacheQuant's dynamic programme) | uniform | profiled (greedy threshold on the profiled distance) | "
                                            "bac (per-site DP + Bubbling Union: a per-step x per-site mask) | diffsparse (per-step x per-site token "
                                            "rates from a fitted cost predictor and a DP; needs a profile made with --rates)")(
      "computes", po::value(&computes), "K: steps that compute (the budget); the others reuse")(
      "min-len", po::value(&min_len)->default_value(1), "dp: shortest run of steps sharing one computation")(
      "max-len", po::value(&max_len), "dp: longest run (default: no bound for --cost feature, lags + 1 for output)")(
      "kinds", po::value(&kinds)->default_value("attn,mlp"), "site kinds whose reuse error is summed")(
      "cost", po::value(&cost)->default_value("feature"),
      "feature: the sites' output distance to the run's first step | output: the model-output reuse error")(
      "output", po::value(&output), "the schedule file to write (YAML)")(
      "union-quantile", po::value(&union_quantile)->default_value(0.5),
      "bac: an upstream site also updates with a downstream FFN when its caching error exceeds this quantile of its "
      "own (1 = no union)");
  auto vm = parse(argc, argv, opts, pos, "cachelab schedule");
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  CL_CHECK(pos.size() == 1, "usage: cachelab schedule PROFILE.h5 --computes K --output FILE.yaml [--method dp]");
  CL_CHECK(!output.empty(), "--output: name the schedule file to write (e.g. schedules/dp-k17.yaml)");
  // The flags as a scheduler component (framework/schedulers.h): the same maker a run uses.
  ConfigNode spec = ConfigNode::make_map("--method");
  spec.child("type") = ConfigNode::make_scalar(method, "--method");
  spec.child("computes") = ConfigNode::make_scalar(std::to_string(computes), "--computes");
  ConfigNode& k = spec.child("kinds");
  k.kind = ConfigNode::Kind::Seq;
  for (auto& x : split_commas(kinds)) k.seq.push_back(ConfigNode::make_scalar(x, "--kinds"));
  spec.child("cost") = ConfigNode::make_scalar(cost, "--cost");
  if (method == "dp") {
    spec.child("min_len") = ConfigNode::make_scalar(std::to_string(min_len), "--min-len");
    if (vm.count("max-len")) spec.child("max_len") = ConfigNode::make_scalar(std::to_string(max_len), "--max-len");
  }
  if (method == "bac") spec.child("union_quantile") = ConfigNode::make_scalar(std::to_string(union_quantile), "--union-quantile");
  if (method == "bac" || method == "diffsparse") spec.erase("cost");
  const auto maker = schedulers().build(spec);
  const Profile p = read_profile(pos[0]);
  std::string summary;
  const Schedule s = maker->make(p, pos[0], &summary);
  save_schedule(s, output);
  std::printf("[cachelab] wrote %s: %s\n", output.c_str(), summary.c_str());
  return 0;
}

}  // namespace

int schedule_commands(int argc, char** argv) {
  const std::string cmd = argv[1];
  return cmd == "profile" ? profile_command(argc, argv) : schedule_command(argc, argv);
}

}  // namespace cachelab
