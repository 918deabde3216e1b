// One stage of continual learning: continue a trained model folder on a new domain's token shard with
// a strategy (continual/continual_task.h), through the one training loop, and write the continued model
// folder with its continual state (continual/state.h) for the next stage.
//
//   ContinueSpec spec;
//   spec.cfg = cfg;                                  // train.*, continual.*, run.out_dir (checkpoints, logs)
//   spec.from = "runs/base/model";
//   spec.train_shard = "runs/stage1/shards/train_000.bin";
//   spec.old_shard = "runs/base/shards/train_000.bin";  // only when `from` has no continual/ state
//   spec.out_model = "runs/stage1/model";
//   ContinueOutcome r = continue_training(spec);
//
// Before training, the state of `from` gives the EWC terms (one per earlier domain), the online-EWC
// term and the replay reservoir; a folder without state gets them from `old_shard` (the Fisher at the
// starting weights, every window offered to the reservoir). After training, the new domain's Fisher
// at the final weights is appended (EWC), folded in (online EWC: F <- gamma F + F_new), and the new
// domain's windows are offered to the reservoir, whatever this stage's strategy.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "dsforge/core/run_config.h"

namespace dsforge::continual {

struct ContinueSpec {
  RunConfig cfg;
  std::string from;            // the model folder to continue (config.json, model.safetensors, tokenizer.json)
  std::string train_shard;     // the new domain, encoded with the model's tokenizer
  std::string val_manifest;    // optional: validation loss during training (its "val" split)
  std::string old_shard;       // optional: earlier-domain tokens when `from` has no continual state
  std::string tokenizer_json;  // the tokenizer the output folder gets ("" = from/tokenizer.json)
  std::string out_model;       // the continued model folder (replaced atomically)
  nlohmann::json domain;       // what state.json records of the new domain ({"name", "data"})
};

struct ContinueOutcome {
  std::string strategy;        // canonical name
  int64_t start_step = 0, final_step = 0;
  double last_loss = 0;
  bool interrupted = false;    // checkpoint saved in cfg.run.out_dir; the model folder is not written
  int64_t ewc_terms = 0;       // EWC terms the penalty had
  int64_t replay_windows = 0;  // reservoir size during training
  double fisher_seconds = 0;
};

ContinueOutcome continue_training(const ContinueSpec& spec);

// ConfigError (naming --old-data) when the strategy needs the earlier domain (a Fisher, replay windows)
// and neither `from`'s continual state nor old data (`old_data`) can give it.
void check_earlier_domain(const std::string& strategy, const std::string& from, bool old_data);

}  // namespace dsforge::continual
