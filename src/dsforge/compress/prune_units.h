// The tensor-level pieces of `dsforge prune` (compress/prune.h), on Hugging Face state dicts
// (model::model_state names): routing statistics, the experts kept, and the removal of experts, heads,
// neurons and small weights. Tests and other tools use them directly.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dsforge/core/safetensors.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"

namespace dsforge::compress {

// Per MoE layer (keyed by "model.layers.N.mlp"), the routing statistics over `tokens` [B, S + 1 + D]:
// load[e] = number of (token, slot) assignments to expert e, mass[e] = sum of their routing weights.
// Main layers see tokens[:, :S]; MTP block k sees its own input as in training (model::DeepseekV3::loss).
struct ExpertStats {
  at::Tensor load, mass;  // [E] float64
};
std::map<std::string, ExpertStats> expert_statistics(model::CausalLmImpl& m, const at::Tensor& tokens);

// The experts each MoE layer keeps (sorted ascending) for removing llround(amount * E) of them.
std::map<std::string, std::vector<int64_t>> experts_to_keep(const model::ModelConfig& c,
                                                           const std::map<std::string, ExpertStats>& stats, double amount);
// Removes every expert not kept: router rows, correction bias entries, expert modules renumbered.
// `keep` must hold the same number of experts for every MoE layer.
void remove_experts(model::ModelConfig& c, TensorMap& state, const std::map<std::string, std::vector<int64_t>>& keep);

// Heads / neurons by weight norm (see above); returns the removed indices per layer prefix.
std::map<std::string, std::vector<int64_t>> prune_heads(model::ModelConfig& c, TensorMap& state, double amount);
std::map<std::string, std::vector<int64_t>> prune_neurons(model::ModelConfig& c, TensorMap& state, double amount);

// Unstructured: the names magnitude pruning considers (2-D linear weights; not the embedding, head or
// router), and the masks (1 = kept) that zero the llround(amount * n) smallest |w| globally or per
// tensor. Ties fall to the lower flat index.
bool magnitude_prunable(const std::string& name, const at::Tensor& t);
std::map<std::string, at::Tensor> magnitude_masks(const TensorMap& state, double amount, const std::string& scope);
// Zhu & Gupta's cubic sparsity at step t (0-based) of a schedule reaching `final_sparsity` at `t_end`.
double cubic_sparsity(int64_t t, int64_t t_end, double final_sparsity);

}  // namespace dsforge::compress
