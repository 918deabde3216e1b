#include "dsforge/model/info.h"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace dsforge::model {

ModelInfo model_info(const ModelConfig& c, int64_t seq_len) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads, V = c.vocab_size;
  const int64_t dqk = c.qk_head_dim(), dv = c.v_head_dim;
  auto p = count_params_formula(c);  // the per-layer parts come from the one formula
  const int64_t router = p.router, routed = p.routed_experts, shared = p.shared_experts, dense = p.dense_ffn;

  ModelInfo info;
  info.seq_len = seq_len;
  info.total = p.main_total;
  info.mtp = p.mtp;
  info.active_excl_embedding = p.active_excl_embedding;
  int64_t n_dense = 0, n_moe = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) (c.is_moe_layer(l) ? n_moe : n_dense)++;
  info.breakdown = {{"embedding", V * d},
                    {"attention (MLA)", c.num_hidden_layers * p.attention},
                    {"dense FFN", n_dense * dense},
                    {"routers", n_moe * router},
                    {"routed experts", n_moe * routed},
                    {"shared experts", n_moe * shared},
                    {"norms", c.num_hidden_layers * 2 * d + d},
                    {"head", V * d},
                    {"MTP modules", p.mtp}};

  // F_fwd = 2 N_act + L * 2 H (d_qk + d_v) (S / 2); the MTP module adds its own matmuls, the shared
  // head and one attention layer. Training = 3 x forward.
  const double attn_flops = 2.0 * H * (dqk + dv) * (static_cast<double>(seq_len) / 2.0);
  const double fwd = 2.0 * static_cast<double>(p.active_excl_embedding) + c.num_hidden_layers * attn_flops;
  const int64_t moe_active = router + p.routed_active + shared;
  const double mtp_act = static_cast<double>(c.num_nextn_predict_layers) * (2 * d * d + p.attention_matmuls + moe_active + V * d);
  const double mtp_fwd = 2.0 * mtp_act + c.num_nextn_predict_layers * attn_flops;
  info.train_flops_per_token_no_mtp = 3.0 * fwd;
  info.train_flops_per_token = 3.0 * (fwd + mtp_fwd);
  info.kv_cache_mla = c.kv_lora_rank + c.qk_rope_head_dim;
  info.kv_cache_mha = H * (dqk + dv);
  return info;
}

double train_flops_per_token(const ModelConfig& c, int64_t seq_len) {
  const double d = static_cast<double>(c.hidden_size), V = static_cast<double>(c.vocab_size);
  const double L = static_cast<double>(c.num_hidden_layers), S = static_cast<double>(seq_len);
  if (c.model_type == "gpt2") {
    const double I = static_cast<double>(c.intermediate_size);
    const double matmul_params = L * (4 * d * d + 2 * d * I) + V * d;  // qkv, proj, fc, proj; tied head
    return 3.0 * (2.0 * matmul_params + L * 2.0 * (2.0 * d) * (S / 2.0));
  }
  if (c.model_type == "lstm") return 3.0 * 2.0 * (L * 8 * d * d + V * d);  // four gates over [x; h]
  return model_info(c, seq_len).train_flops_per_token;
}

namespace {
std::string human(double v) {
  char buf[32];
  if (v >= 1e12) std::snprintf(buf, sizeof buf, "%.2fT", v / 1e12);
  else if (v >= 1e9) std::snprintf(buf, sizeof buf, "%.2fB", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.3fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}
}  // namespace

std::string format_model_info(const ModelInfo& i, const ModelConfig& c) {
  std::string s;
  char line[256];
  auto row = [&](const char* k, const std::string& v) {
    std::snprintf(line, sizeof line, "  %-44s %s\n", k, v.c_str());
    s += line;
  };
  row("parameters (main model)", std::to_string(i.total) + " (" + human(static_cast<double>(i.total)) + ")");
  row("parameters (MTP modules, unique)", std::to_string(i.mtp) + " (" + human(static_cast<double>(i.mtp)) + ")");
  row("activated per token, excl. embedding (N_act)", human(static_cast<double>(i.active_excl_embedding)));
  row(("training FLOPs per token @ S=" + std::to_string(i.seq_len)).c_str(),
      human(i.train_flops_per_token) + " (" + human(i.train_flops_per_token_no_mtp) + " without MTP)");
  std::snprintf(line, sizeof line, "%lld values (%s bytes fp32) vs MHA %lld: %.1fx smaller",
                static_cast<long long>(i.kv_cache_mla), human(4.0 * static_cast<double>(i.kv_cache_mla)).c_str(),
                static_cast<long long>(i.kv_cache_mha), static_cast<double>(i.kv_cache_mha) / static_cast<double>(i.kv_cache_mla));
  row("KV cache per token per layer (MLA latent)", line);
  s += "  breakdown:\n";
  for (const auto& [k, v] : i.breakdown) {
    std::snprintf(line, sizeof line, "    %-42s %14lld  %6.2f%%\n", k.c_str(), static_cast<long long>(v),
                  100.0 * static_cast<double>(v) / static_cast<double>(i.total + i.mtp));
    s += line;
  }
  (void)c;
  return s;
}

std::string model_info_json(const ModelInfo& i) {
  nlohmann::ordered_json j = {{"parameters", i.total},
                              {"mtp_parameters", i.mtp},
                              {"activated_excl_embedding", i.active_excl_embedding},
                              {"seq_len", i.seq_len},
                              {"train_flops_per_token", i.train_flops_per_token},
                              {"train_flops_per_token_no_mtp", i.train_flops_per_token_no_mtp},
                              {"kv_cache_per_token_per_layer_mla", i.kv_cache_mla},
                              {"kv_cache_per_token_per_layer_mha", i.kv_cache_mha}};
  nlohmann::ordered_json b = nlohmann::ordered_json::object();
  for (const auto& [k, v] : i.breakdown) b[k] = v;
  j["breakdown"] = b;
  return j.dump(2);
}

}  // namespace dsforge::model
