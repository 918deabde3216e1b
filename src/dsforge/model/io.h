// Model weights on disk: a folder with config.json + model.safetensors (Hugging Face layout).
#pragma once
#include <string>

#include "dsforge/core/safetensors.h"
#include "dsforge/model/causal_lm.h"

namespace dsforge::model {

// Parameters and buffers (the routing bias included), by Hugging Face name.
TensorMap model_state(const torch::nn::Module& m);
// Copies `state` into the module; every key must be present with the same shape, and no extra
// keys are allowed. Throws CheckpointError naming `origin` and the tensor.
void load_model_state(torch::nn::Module& m, const TensorMap& state, const std::string& origin);

void save_pretrained(const std::string& dir, CausalLmImpl& m);
// Builds the model its config.json names (DeepSeek-V3, GPT-2, LSTM) and loads its weights.
CausalLm load_pretrained(const std::string& dir);

// How a model folder's weights were trained (dsforge_training.json): what evaluation should default to.
struct TrainingInfo {
  int64_t seq_len = 0;  // 0 = unknown (a folder from elsewhere)
  int64_t steps = 0;
};
void save_training_info(const std::string& dir, const TrainingInfo& info);
// The folder's TrainingInfo; zeros when the file is absent. Throws CheckpointError when it is malformed.
TrainingInfo load_training_info(const std::string& dir);

}  // namespace dsforge::model
