// Training checkpoints: `<run>/checkpoints/step_NNNNNNN/` holding config.json, model.safetensors,
// optimizer.safetensors and trainer_state.json, then a DONE marker written last.
//
// A checkpoint is assembled in a `.tmp` folder (every file written atomically and checksummed) and
// renamed into place, so a crash mid-write leaves the previous checkpoints untouched. Loading takes
// the newest folder with DONE that verifies; keep-last-K prunes older ones.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "dsforge/core/safetensors.h"

namespace dsforge::train {

struct CheckpointData {
  TensorMap model;
  TensorMap optimizer;
  TensorMap rng;                 // random generator states ("cpu", "cuda:N"), as uint8 tensors
  nlohmann::json trainer_state;  // step, loader cursor, config hash, ...
  std::string model_config_json;
};

// Writes step_<step>; prunes to the newest `keep`. Returns the folder.
// Fault injection for tests: with DSFORGE_KILL_IN_CHECKPOINT=<step> in the environment the process
// SIGKILLs itself halfway through writing that step (model written, optimizer not).
std::string save_checkpoint(const std::string& run_dir, int64_t step, const CheckpointData& data, int64_t keep);
// The newest complete checkpoint that loads and verifies, with its folder; corrupt ones are reported
// and skipped.
struct LoadedCheckpoint {
  std::string dir;
  CheckpointData data;
};
std::optional<LoadedCheckpoint> load_latest_checkpoint(const std::string& run_dir);
CheckpointData load_checkpoint(const std::string& dir);

}  // namespace dsforge::train
