// Model weights on disk: a folder with config.json + model.safetensors (Hugging Face layout).
#pragma once
#include <string>

#include "dsforge/core/safetensors.h"
#include "dsforge/model/deepseek.h"

namespace dsforge::model {

// Parameters and buffers (the routing bias included), by Hugging Face name.
TensorMap model_state(const torch::nn::Module& m);
// Copies `state` into the module; every key must be present with the same shape, and no extra
// keys are allowed. Throws CheckpointError naming `origin` and the tensor.
void load_model_state(torch::nn::Module& m, const TensorMap& state, const std::string& origin);

void save_pretrained(const std::string& dir, DeepseekV3& m);
DeepseekV3 load_pretrained(const std::string& dir);

}  // namespace dsforge::model
