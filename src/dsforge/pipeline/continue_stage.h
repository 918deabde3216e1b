// `dsforge continue`: keep a trained model learning on new data without forgetting the old, and the
// experiment that measures the forgetting.
//
// One stage (stage_continue): the new data of the run config (data.*) is prepared in run.out_dir,
// encoded with the model's own tokenizer (optionally grown by --extend-tokenizer N merges learned on the
// new data), and trained on with continual.strategy through the one trainer (continual/continue.h):
//
//   <run>/data/, shards/         the new domain, the model's tokenizer
//   <run>/checkpoints/, metrics.jsonl, tb/   the trainer's (re-running the command resumes)
//   <run>/old/old_000.bin        the earlier domain's tokens (--old-data text), when the model has no state
//   <run>/model/                 the continued model + continual/ (Fisher, anchors, replay reservoir)
//
// The sequence (run_sequence): every strategy continues the same base model through domains 1..T-1
// at equal steps; after each stage, bits per byte on every domain's held-out text gives the matrix
// R[i][j] (row 0: the base model), written with the summary (continual/forgetting.h):
//
//   <out>/<strategy>/<i>_<domain>/   each stage's run folder
//   <out>/forgetting.json, forgetting.md, forgetting.html
//
// Online mode (watch_continue, continue_watch.cpp): text files dropped into a folder are trained on in
// rounds, each round one stage continuing the previous round's model:
//
//   <run>/watch.json             the ledger: finished rounds (files, steps, loss), the pending one, skipped files
//   <run>/rounds/0001/           a round's stage folder, its inputs/ copied in before it starts
//   <run>/model/                 the newest round's model (replaced in one step after each round)
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsforge/continual/continue.h"
#include "dsforge/core/run_config.h"

namespace dsforge::pipeline {

struct ContinueOptions {
  std::string from;                    // model folder
  std::string config;                  // run config (TOML) of the new data and the training
  std::vector<std::string> overrides;  // --section.key=value
  std::string strategy;                // "" = continual.strategy of the config
  std::string old_data;                // earlier-domain text file, token shard (.bin) or run folder ("" = none)
  int64_t extend_tokenizer = 0;        // N > 0: learn N merges on the new data first
};
// kOk, or kInterrupted (checkpoint saved; re-run to resume).
int stage_continue(const ContinueOptions& opts);

// One stage in cfg.run.out_dir (prepare, tokenize with the model's tokenizer, train, write model/):
// what stage_continue, each step of a sequence and each watch round run. Re-running it resumes.
continual::ContinueOutcome continue_in_folder(const RunConfig& cfg, const std::string& from, const std::string& old_data,
                                              int64_t extend, const nlohmann::json& domain);
// ConfigError when `from` is not a model folder, `strategy` is unknown, or the strategy needs earlier-domain
// data (Fisher, replay) that neither `from`'s continual state nor `old_data` can give.
void check_continue_start(const std::string& from, const std::string& strategy, const std::string& old_data);

struct WatchOptions {
  std::string from, config;            // as ContinueOptions
  std::vector<std::string> overrides;
  std::string strategy;                // "" = continual.strategy of the config
  std::string old_data;                // round 1 only, when --from has no continual state
  std::string dir;                     // the watched folder (searched recursively)
  double poll_seconds = 5;             // how often the folder is scanned
  double settle_seconds = 2;           // a file is taken once unmodified this long (writers still at work are waited for)
  int64_t max_rounds = 0;              // return after this many rounds (0 = no limit)
  bool exit_when_idle = false;         // return once no new file is ready
  int64_t keep_rounds = 3;             // round folders kept; older ones are removed (watch.json keeps their record)
};
// Watches until stopped: kOk when SIGTERM/SIGINT arrives between rounds, after max_rounds, or when idle
// with exit_when_idle; kInterrupted when a signal stopped a round (its checkpoint saved: the same command
// resumes it before taking new files). Files that are not text or fail to parse are logged and recorded
// as skipped, never retried unless their content changes.
int watch_continue(const WatchOptions& opts);

struct SequenceDomain {
  std::string name;
  std::string train;  // text the stage trains on (domain 0: what the base model was trained on)
  std::string eval;   // held-out text for bits per byte
};
// "name=train.txt:eval.txt" -> a SequenceDomain (ConfigError naming the argument otherwise).
SequenceDomain parse_sequence_domain(const std::string& arg);

struct SequenceOptions {
  std::string from;                    // the base model, trained on domains[0]
  std::string config;                  // run config of every stage (train.max_steps: steps per stage)
  std::vector<std::string> overrides;
  std::vector<SequenceDomain> domains;  // at least 3: domain 0 then the T-1 domains learned in order
  std::vector<std::string> strategies;  // e.g. finetune, ewc, replay
  std::string out;                      // "" = <run.out_dir>/sequence
  int64_t eval_bytes = 100000;          // each held-out text is cut to its first lines up to this size
};
// Returns the text table it also writes to <out>/forgetting.md.
std::string run_sequence(const SequenceOptions& opts);

}  // namespace dsforge::pipeline
