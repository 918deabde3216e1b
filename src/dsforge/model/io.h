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
// Builds the model its config.json names (DeepSeek-V3, GPT-2, LSTM) and loads its weights: dsforge's
// own folders and Hugging Face ones (model.safetensors or the shards of model.safetensors.index.json,
// f32/bf16/f16; GPT-2 in its Conv1D layout, with or without the "transformer." prefix).
CausalLm load_pretrained(const std::string& dir);
// The decode step of a DeepSeek-V3 model then reads bfloat16 copies of its linear weights
// (DeepseekV3Impl::keep_bf16_weights: half the bytes per token; `serve --weights bf16`). Throws
// ConfigError naming `what` for another architecture.
void keep_bf16_decode_weights(CausalLm& m, const std::string& what);
// For a model that will decode (serve, generate): its weights moved into one block of huge-page memory,
// in the order a decode step reads them (DeepseekV3Impl::pack_weights); other architectures unchanged.
// Call it before keep_bf16_decode_weights or not: the copies follow.
void pack_decode_weights(CausalLm& m);

// A folder's weights as stored: one file or every shard the index names (CheckpointError naming the
// file when a shard is missing or a tensor is listed twice). `metadata` is the first file's.
SafetensorsFile load_folder_weights(const std::string& dir);

// GPT-2's Conv1D layers (c_attn, c_proj, c_fc) store weights as [in, out], dsforge's Linear as
// [out, in]: both directions are a transpose of those four weights per block. Files dsforge exports
// in the Hugging Face layout say so in their metadata (kLayoutKey = "hf").
inline constexpr const char* kLayoutKey = "dsforge.layout";
bool is_gpt2_conv1d_weight(const std::string& name);
TensorMap transpose_gpt2_conv1d(TensorMap state);

// Copies the files a model folder carries besides its config and weights (the tokenizer and its
// configs, generation_config.json, dsforge_training.json) from `from_dir` to `to_dir`, where present:
// what a command that rewrites the weights (quantize, prune) keeps.
void copy_companion_files(const std::string& from_dir, const std::string& to_dir);

// How a model folder's weights were trained (dsforge_training.json): what evaluation should default to.
struct TrainingInfo {
  int64_t seq_len = 0;  // 0 = unknown (a folder from elsewhere)
  int64_t steps = 0;
};
void save_training_info(const std::string& dir, const TrainingInfo& info);
// The folder's TrainingInfo; zeros when the file is absent. Throws CheckpointError when it is malformed.
TrainingInfo load_training_info(const std::string& dir);

}  // namespace dsforge::model
