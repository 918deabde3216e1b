// The run's checkpoints as one object: restore the newest that verifies (refusing one written by
// another recipe), save every train.checkpoint_every steps keeping the last K, and keep the best
// weights for early stopping. Every write goes through the same atomic path (temporary folder,
// checksummed files, DONE last, rename), so a crash never leaves a half-written checkpoint in use.
//
//   CheckpointManager ckpt(run_dir, cfg.train.keep_checkpoints, checkpoint_hash(cfg));
//   if (auto ck = ckpt.load_latest()) { ... }
//   ckpt.save(step, data);
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "dsforge/train/checkpoint.h"

namespace dsforge::train {

class CheckpointManager {
 public:
  CheckpointManager(std::string run_dir, int64_t keep, std::string config_hash);

  // The newest checkpoint that loads and verifies; throws CheckpointError when it was written with
  // another config hash (data, tokenizer, model, seq_len, seed).
  std::optional<LoadedCheckpoint> load_latest() const;
  // step_<step>, pruned to the newest `keep`; stamps the config hash. Returns the folder.
  std::string save(int64_t step, CheckpointData data);
  // checkpoints/best: the weights early stopping restores, with their step.
  void save_best(int64_t step, const TensorMap& weights, const std::string& config_json);

  const std::string& last() const { return last_; }

 private:
  std::string run_dir_, hash_, last_;
  int64_t keep_;
};

}  // namespace dsforge::train
