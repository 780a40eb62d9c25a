// The masked-LM K/V cache tests' fixture: a tiny random tiny_mdlm, prompt 8 + 24 generated
// tokens in blocks of 8, 4 steps per block (2 tokens per step), batch 3, its uncached
// reference, and helpers to run an ops layer on a sequence pipeline and find a logged extra.
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "caches/none.h"
#include "framework/runner.h"
#include "models/mdlm_pipeline.h"
#include "models/tiny_mdlm.h"

namespace cachelab::testing {

inline Trajectory run_seq(Backbone& bb, const Pipeline& pipe, Ops* ops, const RunOptions& run, const ReferenceTrace* ref,
                          ReferenceTrace* capture) {
  NoCache none{NoCacheOptions{}};
  RunParts parts;
  parts.backbone = &bb;
  parts.pipeline = &pipe;
  parts.layers = {&none};
  parts.ops = ops;
  return run_trajectory(parts, run, ref, capture);
}

inline int extra_id(const Trajectory& t, const std::string& name) {
  for (size_t i = 0; i < t.extras.size(); ++i)
    if (t.extras[i].name == name) return int(i);
  return -1;
}

struct MdlmFixture {
  TinyMdlm model{[] {
    TinyMdlmOptions o;
    o.hidden_size = 32;
    o.max_length = 32;
    return o;
  }()};
  MdlmPipelineOptions po = [] {
    MdlmPipelineOptions o;
    o.prompt_length = 8;
    o.gen_length = 24;
    o.block_length = 8;
    o.steps_per_block = 4;
    return o;
  }();
  MdlmPipeline pipe{po};
  RunOptions run;
  ReferenceTrace ref;
  Trajectory ref_traj;
  MdlmFixture() {
    run.samples = 3;
    run.batch = 3;
    run.cfg_scale = 1;
    run.probe_samples = 3;
    ref_traj = run_seq(model, pipe, nullptr, run, nullptr, &ref);
  }
};

}  // namespace cachelab::testing
