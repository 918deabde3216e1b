// The worker loop of a search: claim a trial from the study, run the objective with a reporter that
// records intermediate values and asks the pruner, record the outcome; until the study has n_trials.
// The objective is any function (a training run in pipeline/search_stage.h, a test function in the
// benchmark and the tests).
//
//   OptimizeOptions o;
//   o.n_trials = 50;
//   o.sampler.name = "tpe";
//   optimize(*study, [](const TrialRecord& t, const Reporter& report) -> ObjectiveResult {
//     for (int64_t step = 1; step <= 10; ++step)
//       if (report(step, loss_at(step, t.params))) return {loss_at(step, t.params), true};  // pruned
//     return {final_loss(t.params)};
//   }, o);
//
// An exception in the objective records the trial FAIL with its message and the loop goes on; a
// non-finite objective is FAIL too. An interrupted objective (SIGINT) puts the trial back (WAITING)
// and ends the loop.
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "dsforge/search/pruner.h"
#include "dsforge/search/sampler.h"
#include "dsforge/search/study.h"

namespace dsforge::search {

struct ObjectiveResult {
  double value = 0;
  bool pruned = false;
  bool interrupted = false;
};
// Records `value` at `step`; true when the trial should stop now (pruned).
using Reporter = std::function<bool(int64_t step, double value)>;
using Objective = std::function<ObjectiveResult(const TrialRecord& trial, const Reporter& report)>;

struct OptimizeOptions {
  int64_t n_trials = 20;
  uint64_t seed = 0;
  SamplerOptions sampler;
  PrunerOptions pruner;
  double heartbeat_s = 10;
  std::function<void(const TrialRecord& finished)> on_finish;  // logging
};

struct OptimizeSummary {
  int64_t ran = 0;  // trials this worker finished
  bool interrupted = false;
};

OptimizeSummary optimize(Study& study, const Objective& objective, const OptimizeOptions& opts);

// Ask/tell without storage (the benchmark): n_trials of `f` in memory, in order.
std::vector<TrialRecord> optimize_in_memory(const SearchSpace& space, const std::function<double(const Params&)>& f,
                                            int64_t n_trials, uint64_t seed, const SamplerOptions& sampler,
                                            std::vector<double>* sampler_seconds = nullptr);

}  // namespace dsforge::search
