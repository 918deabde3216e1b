#include "dsforge/train/checkpoint_manager.h"

#include <filesystem>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::train {

CheckpointManager::CheckpointManager(std::string run_dir, int64_t keep, std::string config_hash)
    : run_dir_(std::move(run_dir)), hash_(std::move(config_hash)), keep_(keep) {}

std::optional<LoadedCheckpoint> CheckpointManager::load_latest() const {
  auto ck = load_latest_checkpoint(run_dir_);
  if (!ck) return ck;
  const std::string saved = ck->data.trainer_state.value("config_hash", "");
  if (saved != hash_)
    throw CheckpointError(fmt(ck->dir, ": written by a run with another data/tokenizer/model/seq_len/seed config (hash ",
                              saved, ", this run ", hash_, "); use another run.out_dir or delete the checkpoints"));
  return ck;
}

std::string CheckpointManager::save(int64_t step, CheckpointData data) {
  data.trainer_state["config_hash"] = hash_;
  last_ = save_checkpoint(run_dir_, step, data, keep_);
  return last_;
}

void CheckpointManager::save_best(int64_t step, const TensorMap& weights, const std::string& config_json) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(run_dir_) / "checkpoints";
  const fs::path final_dir = root / "best", tmp = root / "best.tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write_file_atomic((tmp / "config.json").string(), config_json);
  save_safetensors((tmp / "model.safetensors").string(), weights, {{"format", "pt"}, {"step", std::to_string(step)}});
  write_file_atomic((tmp / "DONE").string(), std::to_string(step) + "\n");
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_dir(root.string());
}

}  // namespace dsforge::train
