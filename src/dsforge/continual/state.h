// What a continued model carries next to its weights so that the next stage can protect what it knew:
//
//   <model>/continual/ewc.safetensors         per learned domain k: "k.fisher.<param>", "k.anchor.<param>"
//                                             (the domain's diagonal Fisher at the weights after it)
//   <model>/continual/online_ewc.safetensors  "fisher.<param>" (F <- gamma F + F_new) and "anchor.<param>"
//   <model>/continual/replay.safetensors      the replay reservoir: "replay.windows", "replay.seen"
//   <model>/continual/state.json              the domains learned: data, strategy, steps, Fisher kind
//
// Every stage of `dsforge continue` writes all of them, whatever its strategy, so that any later
// stage may choose any strategy. A folder without continual/ (a model from `dsforge train`) starts
// the chain from its old data (--old-data).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dsforge/continual/replay.h"
#include "dsforge/core/safetensors.h"

namespace dsforge::continual {

struct FisherAnchor {
  TensorMap fisher;  // by parameter name, float32
  TensorMap anchor;
};

struct ContinualState {
  std::vector<FisherAnchor> ewc;        // one per learned domain, oldest first
  std::optional<FisherAnchor> online;   // the running Fisher and the latest weights
  std::optional<Reservoir> replay;
  nlohmann::json domains = nlohmann::json::array();  // one record per learned domain
  bool has_fisher() const { return !ewc.empty() && online.has_value(); }
};

// What a reservoir read from disk is sized to.
struct ReplaySpec {
  int64_t capacity = 2048;
  int64_t window = 129;
  uint64_t seed = 0;
};

bool has_state(const std::string& model_dir);
// The state of `model_dir` (all empty when it has no continual/ folder). CheckpointError naming the
// file when one is malformed.
ContinualState load_state(const std::string& model_dir, const ReplaySpec& replay);
// Writes <model_dir>/continual/ (each file atomically).
void save_state(const std::string& model_dir, const ContinualState& state);

}  // namespace dsforge::continual
