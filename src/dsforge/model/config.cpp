#include "dsforge/model/config.h"

#include <nlohmann/json.hpp>
#include <set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace dsforge::model {
namespace {

// Keys of HF configs that describe the checkpoint or the runtime, not the architecture.
const std::set<std::string> kIgnoredKeys = {
    "architectures", "auto_map", "torch_dtype", "transformers_version", "quantization_config", "use_cache",
    "pretraining_tp", "ep_size", "attention_dropout", "attention_bias", "hidden_act", "_name_or_path",
    "dtype", "rope_interleave", "head_dim", "output_router_logits", "router_aux_loss_coef", "pad_token_id"};

// Typed reads of one config value; errors name the file and the key.
int64_t json_int(const nlohmann::json& v, const std::string& origin, const std::string& key) {
  if (!v.is_number_integer()) throw ConfigError(fmt(origin, ": key '", key, "' must be an integer"));
  return v.get<int64_t>();
}
double json_num(const nlohmann::json& v, const std::string& origin, const std::string& key) {
  if (!v.is_number()) throw ConfigError(fmt(origin, ": key '", key, "' must be a number"));
  return v.get<double>();
}
bool json_bool(const nlohmann::json& v, const std::string& origin, const std::string& key) {
  if (!v.is_boolean()) throw ConfigError(fmt(origin, ": key '", key, "' must be true or false"));
  return v.get<bool>();
}
std::string json_str(const nlohmann::json& v, const std::string& origin, const std::string& key) {
  if (!v.is_string()) throw ConfigError(fmt(origin, ": key '", key, "' must be a string"));
  return v.get<std::string>();
}

// GPT-2 (HF GPT2Config names) and LSTM configs.
ModelConfig baseline_config_from_json(const nlohmann::json& j, const std::string& type, const std::string& origin) {
  static const std::set<std::string> ignored = {
      "architectures", "activation_function", "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_type",
      "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
      "scale_attn_weights", "use_cache", "n_ctx", "task_specific_params", "transformers_version", "torch_dtype",
      "reorder_and_upcast_attn", "scale_attn_by_inverse_layer_idx", "_name_or_path", "model_type", "quantization_config"};
  ModelConfig c = model_config_from_preset(type == "gpt2" ? "gpt2-tiny" : "lstm-tiny");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    auto num = [&]() { return json_num(v, origin, k); };
    auto integer = [&]() { return json_int(v, origin, k); };
    if (k == "vocab_size") c.vocab_size = integer();
    else if (k == (type == "gpt2" ? "n_embd" : "hidden_size")) c.hidden_size = integer();
    else if (k == (type == "gpt2" ? "n_layer" : "num_hidden_layers")) c.num_hidden_layers = integer();
    else if (type == "gpt2" && k == "n_head") c.num_attention_heads = integer();
    else if (type == "gpt2" && k == "n_inner") c.intermediate_size = v.is_null() ? 4 * c.hidden_size : integer();
    else if (k == (type == "gpt2" ? "n_positions" : "max_position_embeddings")) c.max_position_embeddings = integer();
    else if (type == "gpt2" && k == "layer_norm_epsilon") c.layer_norm_epsilon = num();
    else if (k == "initializer_range") c.initializer_range = num();
    else if (k == "bos_token_id") c.bos_token_id = v.is_null() ? 0 : integer();
    else if (k == "eos_token_id") c.eos_token_id = v.is_null() ? 0 : integer();
    else if (k == "tie_word_embeddings") {
      if (!v.is_boolean()) throw ConfigError(fmt(origin, ": key '", k, "' must be true or false"));
      c.tie_word_embeddings = v.get<bool>();
    } else if (!ignored.count(k)) {
      throw ConfigError(fmt(origin, ": unknown key '", k, "' for model_type '", type, "'"));
    }
  }
  if (type == "gpt2" && !j.contains("n_inner")) c.intermediate_size = 4 * c.hidden_size;
  validate(c, origin);
  return c;
}

}  // namespace

int64_t mtp_depth(const ModelConfig& c) { return c.is_deepseek() ? c.num_nextn_predict_layers : 0; }
int64_t training_row_length(const ModelConfig& c, int64_t seq_len) { return seq_len + 1 + mtp_depth(c); }
int64_t training_positions(const ModelConfig& c, int64_t seq_len) { return seq_len + mtp_depth(c); }

ModelConfig model_config_from_preset(const std::string& name) {
  ModelConfig c;  // defaults are nano
  if (name == "nano") return c;
  if (name == "micro") {
    c.vocab_size = 2048; c.hidden_size = 256; c.num_hidden_layers = 6; c.intermediate_size = 768;
    c.num_attention_heads = 8; c.num_key_value_heads = 8; c.q_lora_rank = 128; c.kv_lora_rank = 64;
    c.qk_nope_head_dim = 32; c.qk_rope_head_dim = 16; c.v_head_dim = 32;
    c.n_routed_experts = 16; c.num_experts_per_tok = 4; c.moe_intermediate_size = 96; c.n_group = 4; c.topk_group = 2;
    return c;
  }
  if (name == "mini") {
    c.vocab_size = 8192; c.hidden_size = 384; c.num_hidden_layers = 8; c.intermediate_size = 1152;
    c.num_attention_heads = 8; c.num_key_value_heads = 8; c.q_lora_rank = 192; c.kv_lora_rank = 128;
    c.qk_nope_head_dim = 48; c.qk_rope_head_dim = 16; c.v_head_dim = 48;
    c.n_routed_experts = 32; c.num_experts_per_tok = 4; c.moe_intermediate_size = 160; c.n_group = 4; c.topk_group = 2;
    return c;
  }
  if (name == "gpt2-tiny" || name == "gpt2-small") {
    ModelConfig g;
    g.model_type = "gpt2";
    const bool small = name == "gpt2-small";
    g.vocab_size = small ? 50257 : 8192;
    g.hidden_size = small ? 768 : 256;
    g.num_hidden_layers = small ? 12 : 4;
    g.num_attention_heads = small ? 12 : 4;
    g.intermediate_size = 4 * g.hidden_size;
    g.max_position_embeddings = 1024;
    g.tie_word_embeddings = true;
    g.num_nextn_predict_layers = 0;
    g.n_routed_experts = 0;
    g.bos_token_id = g.eos_token_id = small ? 50256 : 0;
    return g;
  }
  if (name == "lstm-tiny") {
    ModelConfig l;
    l.model_type = "lstm";
    l.vocab_size = 1024;
    l.hidden_size = 256;
    l.num_hidden_layers = 2;
    l.max_position_embeddings = 2048;
    l.tie_word_embeddings = true;
    l.num_nextn_predict_layers = 0;
    l.n_routed_experts = 0;
    return l;
  }
  throw ConfigError(fmt("model preset '", name, "' is unknown (known: nano, micro, mini, gpt2-tiny, gpt2-small, lstm-tiny)"));
}

ModelConfig model_config_from_json(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt(origin, ": not valid JSON (", e.what(), ")"));
  }
  if (!j.is_object()) throw ConfigError(fmt(origin, ": expected a JSON object"));
  const std::string type = j.value("model_type", std::string("deepseek_v3"));
  if (type == "gpt2" || type == "lstm") return baseline_config_from_json(j, type, origin);
  if (type != "deepseek_v3" && type != "deepseek_v2")
    throw ConfigError(fmt(origin, ": model_type '", type, "' is not supported (deepseek_v3, deepseek_v2, gpt2, lstm)"));
  ModelConfig c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    auto get_int = [&](int64_t& dst) { dst = json_int(v, origin, k); };
    auto get_num = [&](double& dst) { dst = json_num(v, origin, k); };
    auto get_bool = [&](bool& dst) { dst = json_bool(v, origin, k); };
    auto get_str = [&](std::string& dst) { dst = json_str(v, origin, k); };
    if (k == "model_type") get_str(c.model_type);
    else if (k == "vocab_size") get_int(c.vocab_size);
    else if (k == "hidden_size") get_int(c.hidden_size);
    else if (k == "intermediate_size") get_int(c.intermediate_size);
    else if (k == "moe_intermediate_size") get_int(c.moe_intermediate_size);
    else if (k == "num_hidden_layers") get_int(c.num_hidden_layers);
    else if (k == "num_attention_heads") get_int(c.num_attention_heads);
    else if (k == "num_key_value_heads") get_int(c.num_key_value_heads);
    else if (k == "n_shared_experts") { if (v.is_null()) c.n_shared_experts = 0; else get_int(c.n_shared_experts); }
    else if (k == "n_routed_experts") { if (v.is_null()) c.n_routed_experts = 0; else get_int(c.n_routed_experts); }
    else if (k == "num_experts_per_tok") { if (v.is_null()) c.num_experts_per_tok = 0; else get_int(c.num_experts_per_tok); }
    else if (k == "first_k_dense_replace") get_int(c.first_k_dense_replace);
    else if (k == "moe_layer_freq") get_int(c.moe_layer_freq);
    else if (k == "n_group") get_int(c.n_group);
    else if (k == "topk_group") get_int(c.topk_group);
    else if (k == "topk_method") get_str(c.topk_method);
    else if (k == "scoring_func") get_str(c.scoring_func);
    else if (k == "norm_topk_prob") get_bool(c.norm_topk_prob);
    else if (k == "routed_scaling_factor") get_num(c.routed_scaling_factor);
    else if (k == "q_lora_rank") { if (v.is_null()) c.q_lora_rank = 0; else get_int(c.q_lora_rank); }
    else if (k == "kv_lora_rank") get_int(c.kv_lora_rank);
    else if (k == "qk_nope_head_dim") get_int(c.qk_nope_head_dim);
    else if (k == "qk_rope_head_dim") get_int(c.qk_rope_head_dim);
    else if (k == "v_head_dim") get_int(c.v_head_dim);
    else if (k == "max_position_embeddings") get_int(c.max_position_embeddings);
    else if (k == "rms_norm_eps") get_num(c.rms_norm_eps);
    else if (k == "rope_theta") get_num(c.rope_theta);
    else if (k == "num_nextn_predict_layers") get_int(c.num_nextn_predict_layers);
    else if (k == "tie_word_embeddings") get_bool(c.tie_word_embeddings);
    else if (k == "initializer_range") get_num(c.initializer_range);
    else if (k == "aux_loss_alpha") get_num(c.aux_loss_alpha);
    else if (k == "seq_aux") get_bool(c.seq_aux);
    else if (k == "bos_token_id") { if (!v.is_null()) get_int(c.bos_token_id); }
    else if (k == "eos_token_id") { if (!v.is_null()) get_int(c.eos_token_id); }
    else if (k == "rope_scaling") {
      if (v.is_null()) continue;
      if (!v.is_object()) throw ConfigError(fmt(origin, ": key 'rope_scaling' must be an object or null"));
      for (auto r = v.begin(); r != v.end(); ++r) {
        const std::string rk = r.key();
        const auto& rv = r.value();
        auto num = [&](double& dst) { dst = json_num(rv, origin, "rope_scaling." + rk); };
        if (rk == "type" || rk == "rope_type") c.rope_scaling.type = rv.get<std::string>();
        else if (rk == "factor") num(c.rope_scaling.factor);
        else if (rk == "original_max_position_embeddings") c.rope_scaling.original_max_position_embeddings = rv.get<int64_t>();
        else if (rk == "beta_fast") num(c.rope_scaling.beta_fast);
        else if (rk == "beta_slow") num(c.rope_scaling.beta_slow);
        else if (rk == "mscale") num(c.rope_scaling.mscale);
        else if (rk == "mscale_all_dim") num(c.rope_scaling.mscale_all_dim);
        else throw ConfigError(fmt(origin, ": unknown key 'rope_scaling.", rk, "'"));
      }
    } else if (!kIgnoredKeys.count(k)) {
      throw ConfigError(fmt(origin, ": unknown key '", k, "' (expected DeepseekV3Config field names)"));
    }
  }
  validate(c, origin);
  return c;
}

ModelConfig load_model_config(const std::string& path_or_preset) {
  if (path_or_preset.find('/') == std::string::npos && path_or_preset.find(".json") == std::string::npos)
    return model_config_from_preset(path_or_preset);
  if (!file_exists(path_or_preset)) throw ConfigError(fmt(path_or_preset, ": model config not found"));
  return model_config_from_json(read_file(path_or_preset), path_or_preset);
}

void validate(const ModelConfig& c, const std::string& origin) {
  auto need = [&](bool ok, const char* key, const std::string& what) {
    if (!ok) throw ConfigError(fmt(origin, ": '", key, "' ", what));
  };
  if (c.model_type == "gpt2" || c.model_type == "lstm") {
    const bool g = c.model_type == "gpt2";
    need(c.vocab_size > 0, "vocab_size", "must be positive");
    need(c.hidden_size > 0, g ? "n_embd" : "hidden_size", "must be positive");
    need(c.num_hidden_layers > 0, g ? "n_layer" : "num_hidden_layers", "must be positive");
    need(c.max_position_embeddings > 0, g ? "n_positions" : "max_position_embeddings", "must be positive");
    if (g) {
      need(c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0, "n_head", "must divide n_embd");
      need(c.intermediate_size > 0, "n_inner", "must be positive");
      need(c.tie_word_embeddings, "tie_word_embeddings", "must be true for GPT-2");
    }
    return;
  }
  need(c.vocab_size > 0, "vocab_size", "must be positive");
  need(c.hidden_size > 0, "hidden_size", "must be positive");
  need(c.num_hidden_layers > 0, "num_hidden_layers", "must be positive");
  need(c.num_attention_heads > 0, "num_attention_heads", "must be positive");
  need(c.kv_lora_rank > 0, "kv_lora_rank", "must be positive");
  need(c.q_lora_rank >= 0, "q_lora_rank", "must be >= 0 (0 or null = no q compression)");
  need(c.qk_nope_head_dim >= 1, "qk_nope_head_dim", "must be >= 1");
  need(c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", "must be positive and even");
  need(c.v_head_dim > 0, "v_head_dim", "must be positive");
  need(c.scoring_func == "sigmoid" || c.scoring_func == "softmax", "scoring_func", "must be \"sigmoid\" or \"softmax\"");
  need(c.moe_layer_freq >= 1, "moe_layer_freq", "must be >= 1");
  need(c.first_k_dense_replace >= 0, "first_k_dense_replace", "must be >= 0");
  if (c.n_routed_experts > 0) {
    need(c.num_experts_per_tok >= 1 && c.num_experts_per_tok <= c.n_routed_experts, "num_experts_per_tok",
         fmt("must be in [1, n_routed_experts = ", c.n_routed_experts, "]"));
    need(c.n_group >= 1 && c.n_routed_experts % c.n_group == 0, "n_group", "must divide n_routed_experts");
    need(c.topk_group >= 1 && c.topk_group <= c.n_group, "topk_group", "must be in [1, n_group]");
    need(c.topk_group * (c.n_routed_experts / c.n_group) >= c.num_experts_per_tok, "topk_group",
         "selects too few experts for num_experts_per_tok");
    need(c.moe_intermediate_size > 0, "moe_intermediate_size", "must be positive");
  }
  need(c.intermediate_size > 0 || c.first_k_dense_replace == 0, "intermediate_size", "must be positive");
  need(c.num_nextn_predict_layers >= 0, "num_nextn_predict_layers", "must be >= 0");
  need(c.max_position_embeddings > 0, "max_position_embeddings", "must be positive");
  need(c.rope_scaling.type.empty() || c.rope_scaling.type == "yarn" || c.rope_scaling.type == "default",
       "rope_scaling.type", "must be \"yarn\" (or absent)");
  need(!c.tie_word_embeddings, "tie_word_embeddings", "must be false for DeepSeek-V3 (untied embedding and head)");
}

std::string model_config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  if (c.model_type == "gpt2") {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["model_type"] = "gpt2";
    j["vocab_size"] = c.vocab_size;
    j["n_positions"] = c.max_position_embeddings;
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.num_hidden_layers;
    j["n_head"] = c.num_attention_heads;
    j["n_inner"] = c.intermediate_size;
    j["activation_function"] = "gelu_new";
    j["layer_norm_epsilon"] = c.layer_norm_epsilon;
    j["initializer_range"] = c.initializer_range;
    j["bos_token_id"] = c.bos_token_id;
    j["eos_token_id"] = c.eos_token_id;
    j["tie_word_embeddings"] = true;
    return j.dump(2) + "\n";
  }
  if (c.model_type == "lstm") {
    j["model_type"] = "lstm";
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["num_hidden_layers"] = c.num_hidden_layers;
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["initializer_range"] = c.initializer_range;
    j["bos_token_id"] = c.bos_token_id;
    j["eos_token_id"] = c.eos_token_id;
    return j.dump(2) + "\n";
  }
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["n_shared_experts"] = c.n_shared_experts;
  j["n_routed_experts"] = c.n_routed_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["moe_layer_freq"] = c.moe_layer_freq;
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  j["topk_method"] = c.topk_method;
  j["scoring_func"] = c.scoring_func;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  if (c.q_lora_rank > 0) j["q_lora_rank"] = c.q_lora_rank;
  else j["q_lora_rank"] = nullptr;
  j["kv_lora_rank"] = c.kv_lora_rank;
  j["qk_nope_head_dim"] = c.qk_nope_head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["v_head_dim"] = c.v_head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    nlohmann::ordered_json r;
    r["type"] = c.rope_scaling.type;
    r["factor"] = c.rope_scaling.factor;
    r["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    r["beta_fast"] = c.rope_scaling.beta_fast;
    r["beta_slow"] = c.rope_scaling.beta_slow;
    r["mscale"] = c.rope_scaling.mscale;
    r["mscale_all_dim"] = c.rope_scaling.mscale_all_dim;
    j["rope_scaling"] = r;
  }
  j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["initializer_range"] = c.initializer_range;
  j["aux_loss_alpha"] = c.aux_loss_alpha;
  j["seq_aux"] = c.seq_aux;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  return j.dump(2) + "\n";
}

ParamCounts count_params_formula(const ModelConfig& c) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads, dqk = c.qk_head_dim();
  const int64_t attn = (c.q_lora_rank > 0 ? d * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * H * dqk : d * H * dqk) +
                       d * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank +
                       c.kv_lora_rank * H * (c.qk_nope_head_dim + c.v_head_dim) + H * c.v_head_dim * d;
  const int64_t norms = 2 * d;
  const int64_t dense = 3 * d * c.intermediate_size;
  const int64_t E = c.n_routed_experts, fe = c.moe_intermediate_size, Ns = c.n_shared_experts;
  const int64_t moe_total = E * d + E * 3 * d * fe + 3 * d * (Ns * fe);
  const int64_t moe_active = E * d + c.num_experts_per_tok * 3 * d * fe + 3 * d * (Ns * fe);
  // N_act counts matmul weights only (DEEPSEEK.md §3.3: norms negligible), so the latent norms are out.
  const int64_t attn_matmuls = attn - (c.q_lora_rank > 0 ? c.q_lora_rank : 0) - c.kv_lora_rank;
  ParamCounts p;
  p.attention = attn;
  p.attention_matmuls = attn_matmuls;
  p.dense_ffn = dense;
  p.router = E * d;
  p.routed_experts = E * 3 * d * fe;
  p.routed_active = c.num_experts_per_tok * 3 * d * fe;
  p.shared_experts = 3 * d * (Ns * fe);
  p.main_total = 2 * c.vocab_size * d + d;
  p.active_excl_embedding = c.vocab_size * d;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    bool moe = c.is_moe_layer(l);
    p.main_total += attn + norms + (moe ? moe_total : dense);
    p.active_excl_embedding += attn_matmuls + (moe ? moe_active : dense);
  }
  p.mtp = c.num_nextn_predict_layers * (2 * d + 2 * d * d + attn + norms + moe_total + d);
  return p;
}

}  // namespace dsforge::model
