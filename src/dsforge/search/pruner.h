// Pruners stop unpromising trials from the validation losses they report during training
// (TrainCallbacks::evaluate). Each decision is a pure function of the study's trials and their
// intermediate values (step -> loss), so a resumed or a concurrent worker decides the same.
//
//   median      Optuna's MedianPruner: after n_startup_trials complete trials and n_warmup_steps, prune
//               when the trial's best loss so far is worse than the median of the complete trials' losses
//               at the same step
//   asha        asynchronous successive halving (Li et al. 2020, "A System for Massively Parallel
//               Hyperparameter Tuning", Alg. 2 in its stopping form): rung k at step min_resource * rf^k;
//               a trial reaching a rung continues only when its loss is within the best 1/rf of every
//               trial that reached that rung (the best one when fewer than rf have)
//   hyperband   Li et al. 2018: brackets of ASHA with min_early_stopping_rate 0 .. s_max; each trial is
//               assigned one bracket (weighted by Hyperband's bracket sizes) and competes only inside it
//   none        never prunes
//
//   auto pruner = make_pruner({.name = "asha", .min_resource = 50});
//   if (pruner->should_prune(all_trials, current)) ...  // current.intermediate holds its reports so far
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dsforge/search/sampler.h"

namespace dsforge::search {

struct PrunerOptions {
  std::string name = "none";     // none, median, asha, hyperband
  int64_t n_startup_trials = 5;  // median
  int64_t n_warmup_steps = 0;    // median
  int64_t n_min_trials = 1;      // median: complete trials reporting at the step
  int64_t min_resource = 1;      // asha, hyperband: steps of the first rung
  int64_t max_resource = 0;      // hyperband: the full budget in steps (train.max_steps)
  int64_t reduction_factor = 0;  // 0 = Optuna's defaults: 4 (asha), 3 (hyperband)
  int64_t min_early_stopping_rate = 0;  // asha: the first rung's exponent
};

class Pruner {
 public:
  virtual ~Pruner() = default;
  // `trials`: the study's trials (`current` among them or not); `current.intermediate` its reports so far.
  virtual bool should_prune(const std::vector<TrialRecord>& trials, const TrialRecord& current) const = 0;
};

std::unique_ptr<Pruner> make_pruner(const PrunerOptions& opts);

// Hyperband's bracket of a trial (exposed for tests and the report); -1 for other pruners.
int64_t hyperband_bracket(const PrunerOptions& opts, int64_t trial_number);

}  // namespace dsforge::search
