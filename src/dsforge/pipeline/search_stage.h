// `dsforge search`: hyperparameter search over a run config, each trial a training run through the
// one trainer (stage_train), pruned on its validation losses, stored in a shared SQLite study.
//
//   <out>/study.db              the study (default; --study elsewhere to share it)
//   <out>/trial_0007/           one trial's run folder: config.toml, checkpoints/, metrics.jsonl, model/;
//                               data/, tokenizer.json and shards/ link to the base run folder's
//   <out>/trials.json           every trial: number, state, params, value, intermediate losses, error
//   <out>/best.toml             the best trial's run config, ready for `dsforge train --config`
//                               (its run folder <out>/best links the same data)
//   <out>/best_model.json       the best trial's model config, when the space has model.* keys
//
// The data stages (prepare, tokenizer, tokenize) run once on the base config's run folder first; the
// space may not change their keys. Rerunning the same command resumes the study: finished trials are
// kept, trials of dead workers are re-queued and resume from their checkpoints.
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/search/optimize.h"
#include "dsforge/search/pbt.h"

namespace dsforge::pipeline {

// --strategy pbt: population-based training (search/pbt.h). Every member trains to train.max_steps in
// generations of --interval steps; trial g * P + m is member m's generation g in its own folder
// <out>/trial_NNNN, which starts from a copy of the checkpoint it continues (its own previous segment's,
// or the better member's it exploits). Only keys that may change in the middle of a training are
// searched (train.lr, train.weight_decay, ...; not model.*, data.*, train.seq_len, train.batch_size).
// Rerunning the same command resumes at the first unfinished segment; the study stores the lineage.
struct SearchOptions {
  std::string config;                  // run config (TOML)
  std::vector<std::string> overrides;  // --section.key=value on the base config
  std::string space;                   // search space (TOML, search/space.h)
  int64_t n_trials = 20;
  int64_t workers = 1;
  std::string study;                   // "" = <out>/study.db
  std::string out;                     // "" = <run.out_dir>/search
  std::string strategy = "sample";     // sample (a sampler proposes each trial) | pbt
  search::PbtOptions pbt;
  search::SamplerOptions sampler;
  search::PrunerOptions pruner;        // min_resource 0 = train.eval_every, max_resource 0 = train.max_steps
  int64_t seed = -1;                   // -1 = run.seed
  bool worker = false;                 // one worker of --workers K: no data stages, no outputs
  std::vector<std::string> worker_argv;  // the command line of one worker (set by the CLI for --workers > 1)
};

// Runs (or resumes) the search; returns an exit code (kOk, kInterrupted).
int stage_search(const SearchOptions& opts);
// `dsforge search report`: the text report of a study; writes trials.json and best.toml beside it
// when `out` is given.
std::string search_report(const std::string& study_path);

}  // namespace dsforge::pipeline
