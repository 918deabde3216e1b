// Fine-tuning a compressed model through the one trainer (train/trainer.h): recovery after pruning, and
// the data side that distillation shares (a run config whose run folder holds token shards made with
// the model's tokenizer).
//
//   RecoveryOptions ro; ro.steps = 200; ro.run_config = "configs/run/x.toml"; ro.work_dir = "out.recovery";
//   RecoveryResult r = recover(model, "runs/x/model", ro);   // `model` now holds the fine-tuned weights
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/core/run_config.h"
#include "dsforge/model/causal_lm.h"

namespace dsforge::compress {

// The run config for a fine-tuning run of `steps` steps that writes its checkpoints, metrics.jsonl and
// tb/ to `work_dir`, and the token shards it reads (the config's own run folder): the shards' manifest
// must exist and the run's tokenizer.json must equal `model_dir`'s (ConfigError naming both otherwise).
struct FinetuneData {
  RunConfig cfg;              // run.out_dir = work_dir, train.max_steps = steps (when > 0)
  std::string manifest_path;  // <the config's run folder>/shards/manifest.json
  std::string train_shard;
};
FinetuneData finetune_data(const std::string& run_config, const std::vector<std::string>& overrides, int64_t steps,
                           const std::string& work_dir, const std::string& model_dir, int64_t vocab_size,
                           const std::string& what);

struct RecoveryOptions {
  int64_t steps = 0;
  std::string run_config;
  std::vector<std::string> overrides;
  std::string work_dir;
  std::string identity;   // what checkpoints in work_dir must have been made for (the source and the pruning)
  bool keep_zeros = false;  // magnitude pruning: the zero weights stay zero (mask re-applied after each step)
  std::string scope = "global";
  double cubic_final = 0;   // > 0: gradual magnitude pruning to this sparsity (Zhu & Gupta)
  int64_t prune_every = 10, prune_end = 1;  // cubic: mask update interval, step at which sparsity is final
};
struct RecoveryResult {
  int64_t final_step = 0;
  double final_loss = 0;  // mean training loss of the last logging window
};
// Trains `m` (replaced by the fine-tuned model) on the run config's training shard.
RecoveryResult recover(model::CausalLm& m, const std::string& model_dir, const RecoveryOptions& o);

}  // namespace dsforge::compress
