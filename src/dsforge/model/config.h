// Model configuration with Hugging Face `DeepseekV3Config` field names, so that a real DeepSeek
// config.json parses unchanged and our config.json loads in `transformers`.
//
//   ModelConfig c = model_config_from_preset("nano");      // DEEPSEEK.md §3.4
//   ModelConfig d = load_model_config("config.json");      // strict: unknown keys are errors
#pragma once
#include <cstdint>
#include <string>

namespace dsforge::model {

struct RopeScaling {
  std::string type;  // "" = none, "yarn"
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;  // 0 = absent
};

// One struct for every model type; `model_type` says which fields matter:
//   deepseek_v3 (and deepseek_v2): every field below, HF DeepseekV3Config names.
//   gpt2: vocab_size, hidden_size (n_embd), num_hidden_layers (n_layer), num_attention_heads (n_head),
//         intermediate_size (n_inner), max_position_embeddings (n_positions), layer_norm_epsilon;
//         read and written with HF GPT2Config names; embeddings tied.
//   lstm: vocab_size, hidden_size, num_hidden_layers, max_position_embeddings, tie_word_embeddings.
struct ModelConfig {
  std::string model_type = "deepseek_v3";
  int64_t vocab_size = 1024;
  int64_t hidden_size = 128;
  int64_t intermediate_size = 320;        // dense SwiGLU width (first_k_dense_replace layers)
  int64_t moe_intermediate_size = 48;     // width of each routed / shared expert
  int64_t num_hidden_layers = 4;
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 4;        // informational; MLA has no GQA
  int64_t n_shared_experts = 1;
  int64_t n_routed_experts = 8;
  int64_t num_experts_per_tok = 2;
  int64_t first_k_dense_replace = 1;
  int64_t moe_layer_freq = 1;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  std::string topk_method = "noaux_tc";
  std::string scoring_func = "sigmoid";   // or "softmax" (V2)
  bool norm_topk_prob = true;
  double routed_scaling_factor = 2.5;
  int64_t q_lora_rank = 64;               // 0 = no q compression (JSON null)
  int64_t kv_lora_rank = 32;
  int64_t qk_nope_head_dim = 16;
  int64_t qk_rope_head_dim = 8;
  int64_t v_head_dim = 16;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t num_nextn_predict_layers = 1;   // MTP depth D
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  double aux_loss_alpha = 1e-4;
  bool seq_aux = true;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 0;
  double layer_norm_epsilon = 1e-5;  // gpt2

  bool is_deepseek() const { return model_type == "deepseek_v3" || model_type == "deepseek_v2"; }

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
};

// The one sequence contract. A training row holds seq_len inputs, their next-token targets, and one
// more target per MTP depth: seq_len + 1 + D tokens. The model reads the first seq_len + D of them
// (the MTP modules look D tokens ahead), so max_position_embeddings must cover training_positions().
int64_t mtp_depth(const ModelConfig& c);
int64_t training_row_length(const ModelConfig& c, int64_t seq_len);
int64_t training_positions(const ModelConfig& c, int64_t seq_len);

// nano, micro, mini (DeepSeek-V3); gpt2-tiny, gpt2-small (the 124M GPT-2); lstm-tiny.
ModelConfig model_config_from_preset(const std::string& name);
ModelConfig model_config_from_json(const std::string& text, const std::string& origin);
// A path to config.json, or a preset name.
ModelConfig load_model_config(const std::string& path_or_preset);
std::string model_config_to_json(const ModelConfig& c);
void validate(const ModelConfig& c, const std::string& origin);

// Parameter counts of DEEPSEEK.md §3.3 (formulas, independent of any module).
struct ParamCounts {
  int64_t main_total = 0;
  int64_t mtp = 0;
  int64_t active_excl_embedding = 0;
  // Per layer, the parts the totals are made of (model_info's breakdown and FLOPs use them).
  int64_t attention = 0;          // MLA weights, the latent norms included
  int64_t attention_matmuls = 0;  // the same without the norms
  int64_t dense_ffn = 0;
  int64_t router = 0, routed_experts = 0, routed_active = 0, shared_experts = 0;
};
ParamCounts count_params_formula(const ModelConfig& c);

}  // namespace dsforge::model
