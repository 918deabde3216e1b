// `dsforge model info`: the figures of DEEPSEEK.md §3.3 for a config, from formulas alone (no
// module is built, so it works for the 671B config too).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dsforge/model/config.h"

namespace dsforge::model {

struct ModelInfo {
  int64_t total = 0;                  // main model parameters
  int64_t mtp = 0;                    // unique MTP parameters (embedding and head are shared)
  int64_t active_excl_embedding = 0;  // N_act: head + per-layer attention and active FFN matmuls
  int64_t seq_len = 0;
  double train_flops_per_token = 0;          // 3 * F_fwd, MTP included
  double train_flops_per_token_no_mtp = 0;
  int64_t kv_cache_mla = 0;           // elements per token per layer: d_c + d_r
  int64_t kv_cache_mha = 0;           // the equivalent MHA cache: H * (d_qk + d_v)
  std::vector<std::pair<std::string, int64_t>> breakdown;  // parameters per module kind
};

ModelInfo model_info(const ModelConfig& c, int64_t seq_len);
// Training FLOPs per token (3 x forward: matrix products plus causal attention, MTP included) for any
// model_type; the numerator of model FLOPs utilisation.
double train_flops_per_token(const ModelConfig& c, int64_t seq_len);
std::string format_model_info(const ModelInfo& info, const ModelConfig& c);
std::string model_info_json(const ModelInfo& info);

}  // namespace dsforge::model
