#include "dsforge/compress/prune.h"
#include "dsforge/compress/prune_units.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "dsforge/compress/calibration.h"
#include "dsforge/compress/recovery.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/text.h"
#include "dsforge/core/log.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::compress {
namespace fs = std::filesystem;

namespace {

std::string layer_prefix(int64_t i) { return fmt("model.layers.", i); }

// Every MoE layer's "model.layers.N.mlp", main layers then MTP blocks (the order of DeepseekV3::moe_layers).
std::vector<std::string> moe_prefixes(const model::ModelConfig& c) {
  std::vector<std::string> out;
  if (c.n_routed_experts <= 0) return out;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_moe_layer(l)) out.push_back(layer_prefix(l) + ".mlp");
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) out.push_back(layer_prefix(c.num_hidden_layers + k) + ".mlp");
  return out;
}

const at::Tensor& need(const TensorMap& s, const std::string& name) {
  auto it = s.find(name);
  if (it == s.end()) throw CheckpointError(fmt("prune: the model has no tensor '", name, "'"));
  return it->second;
}

// Indices 0..n-1 ordered by ascending score; equal scores keep index order (stable).
std::vector<int64_t> ascending(const std::vector<double>& score) {
  std::vector<int64_t> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[a] < score[b]; });
  return order;
}

// Removes the `n_remove` lowest-scoring of `score`'s units: (kept ascending, removed ascending).
std::pair<std::vector<int64_t>, std::vector<int64_t>> split_lowest(const std::vector<double>& score, int64_t n_remove) {
  std::vector<int64_t> order = ascending(score);
  std::vector<int64_t> removed(order.begin(), order.begin() + n_remove), kept(order.begin() + n_remove, order.end());
  std::sort(removed.begin(), removed.end());
  std::sort(kept.begin(), kept.end());
  return {kept, removed};
}

at::Tensor index_tensor(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }

std::vector<double> to_vector(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

void require_deepseek(const model::ModelConfig& c, const std::string& method) {
  if (!c.is_deepseek())
    throw ConfigError(fmt("prune --method ", method, ": needs a DeepSeek-V3 model (MLA, MoE); this one is '", c.model_type,
                          "' (use --method magnitude)"));
}

// ---- neurons of one SwiGLU at `p` ("...mlp" or "...experts.J"): L2 norm of (gate row, up row, down column).
std::vector<int64_t> prune_swiglu(TensorMap& s, const std::string& p, int64_t n_remove) {
  const at::Tensor g = need(s, p + ".gate_proj.weight"), u = need(s, p + ".up_proj.weight"), d = need(s, p + ".down_proj.weight");
  const at::Tensor score = (g.pow(2).sum(1) + u.pow(2).sum(1) + d.pow(2).sum(0)).sqrt();  // [inter]
  auto [kept, removed] = split_lowest(to_vector(score), n_remove);
  const at::Tensor k = index_tensor(kept);
  s[p + ".gate_proj.weight"] = g.index_select(0, k);
  s[p + ".up_proj.weight"] = u.index_select(0, k);
  s[p + ".down_proj.weight"] = d.index_select(1, k);
  return removed;
}

void check_amount(double amount) {
  if (!(amount >= 0.0 && amount < 1.0)) throw ConfigError(fmt("prune: --amount ", amount, " must be in [0, 1)"));
}

// The calibration rows: the text after an end-of-text token, cut into rows of seq_len + 1 + D tokens.
at::Tensor calibration_rows(const std::string& model_dir, const model::ModelConfig& c, const PruneOptions& o) {
  const std::vector<int64_t> ids = calibration_ids(model_dir, o.calib_path, o.calib_tokens, "prune --method experts");
  int64_t seq = o.calib_seq_len > 0 ? o.calib_seq_len : model::load_training_info(model_dir).seq_len;
  if (seq <= 0) seq = 128;
  seq = std::min(seq, c.max_position_embeddings - model::mtp_depth(c));
  const int64_t row = model::training_row_length(c, seq), n_rows = static_cast<int64_t>(ids.size()) / row;
  if (n_rows < 1)
    throw DataError(fmt("--calib ", o.calib_path, ": ", ids.size(), " tokens, fewer than one row of ", row,
                        " (a longer text, or a smaller --calib-seq-len)"));
  std::vector<int64_t> v(ids.begin(), ids.begin() + n_rows * row);
  return at::tensor(v, at::kLong).view({n_rows, row});
}

}  // namespace

// ------------------------------------------------------------------------------------------ experts
std::map<std::string, ExpertStats> expert_statistics(model::CausalLmImpl& m, const at::Tensor& tokens) {
  auto* ds = dynamic_cast<model::DeepseekV3Impl*>(&m);
  if (!ds || ds->config().n_routed_experts <= 0) throw ConfigError("prune: expert statistics need a DeepSeek MoE model");
  const model::ModelConfig& c = ds->config();
  at::NoGradGuard no_grad;
  const bool was_training = ds->is_training();
  ds->eval();
  const model::RopeTables rope = model::make_rope_tables(c, c.max_position_embeddings);
  std::map<std::string, ExpertStats> stats;
  for (const auto& p : moe_prefixes(c))
    stats[p] = {at::zeros({c.n_routed_experts}, at::kDouble), at::zeros({c.n_routed_experts}, at::kDouble)};

  // One block as DecoderLayer::forward computes it, with the router's choices recorded on the way.
  auto block = [&](model::DecoderLayerImpl& layer, const at::Tensor& h, const std::string& prefix) {
    at::Tensor x = h + layer.self_attn(layer.input_layernorm(h), rope);
    at::Tensor n = layer.post_attention_layernorm(x);
    if (!layer.moe) return x + layer.dense_mlp(n);
    const model::Routing r = layer.moe->gate(n.reshape({-1, n.size(-1)}));
    ExpertStats& st = stats.at(prefix);
    const at::Tensor idx = r.indices.reshape({-1});
    st.load.index_add_(0, idx, at::ones({idx.numel()}, at::kDouble));
    st.mass.index_add_(0, idx, r.weights.reshape({-1}).to(at::kDouble));
    return x + layer.moe(n);
  };

  const int64_t D = c.num_nextn_predict_layers, L = tokens.size(1), S = L - 1 - D;
  if (S < 1) throw DataError(fmt("prune: calibration rows of ", L, " tokens are too short"));
  for (int64_t b0 = 0; b0 < tokens.size(0); b0 += 8) {
    const at::Tensor t = tokens.narrow(0, b0, std::min<int64_t>(8, tokens.size(0) - b0));
    at::Tensor h = ds->model->embed_tokens(t.narrow(1, 0, S));  // (B, S, d)
    for (size_t l = 0; l < ds->model->main_layers.size(); ++l)
      h = block(*ds->model->main_layers[l], h, layer_prefix(static_cast<int64_t>(l)) + ".mlp");
    at::Tensor h_prev = ds->model->norm(h);
    // MTP depth k reads [enorm(Emb(t_{i+k})); hnorm(h^{k-1}_i)] (DeepseekV3::mtp_logits with targets).
    for (size_t k0 = 0; k0 < ds->model->mtp_layers.size(); ++k0) {
      const int64_t k = static_cast<int64_t>(k0) + 1, n = std::min(h_prev.size(1), L - 1 - k);
      if (n <= 0) break;
      auto& layer = ds->model->mtp_layers[k0];
      at::Tensor emb = ds->model->embed_tokens(t.narrow(1, k, n));
      at::Tensor mixed = layer->eh_proj(at::cat({layer->enorm(emb), layer->hnorm(h_prev.narrow(1, 0, n))}, -1));
      h_prev = block(*layer, mixed, layer_prefix(c.num_hidden_layers + static_cast<int64_t>(k0)) + ".mlp");
    }
  }
  if (was_training) ds->train();
  return stats;
}

std::map<std::string, std::vector<int64_t>> experts_to_keep(const model::ModelConfig& c,
                                                           const std::map<std::string, ExpertStats>& stats, double amount) {
  check_amount(amount);
  const int64_t E = c.n_routed_experts, G = std::max<int64_t>(1, c.n_group), K = c.num_experts_per_tok;
  const int64_t n_remove = std::llround(amount * static_cast<double>(E));
  if (n_remove < 1)
    throw ConfigError(fmt("prune --method experts: --amount ", amount, " removes none of the ", E, " routed experts (at least ",
                          1.0 / static_cast<double>(E), " removes one)"));
  if (n_remove % G != 0) {
    std::ostringstream ok;
    for (int64_t r = G; r < E; r += G) ok << (r == G ? "" : ", ") << static_cast<double>(r) / static_cast<double>(E);
    throw ConfigError(fmt("prune --method experts: --amount ", amount, " removes ", n_remove, " of ", E,
                          " routed experts, but group-limited routing (n_group = ", G,
                          ") needs the same number removed from every group: use an amount that removes a multiple of ", G,
                          " (", ok.str(), ")"));
  }
  const int64_t E2 = E - n_remove, per_group = E2 / G;
  if (E2 < K || (G > 1 && c.topk_group * per_group < K))
    throw ConfigError(fmt("prune --method experts: --amount ", amount, " leaves ", E2, " routed experts (", per_group,
                          " per group, topk_group = ", c.topk_group, "), too few for num_experts_per_tok = ", K));
  std::map<std::string, std::vector<int64_t>> keep;
  for (const auto& p : moe_prefixes(c)) {
    auto it = stats.find(p);
    if (it == stats.end()) throw ConfigError(fmt("prune: no routing statistics for ", p));
    const std::vector<double> load = to_vector(it->second.load), mass = to_vector(it->second.mass);
    const double tl = std::accumulate(load.begin(), load.end(), 0.0), tm = std::accumulate(mass.begin(), mass.end(), 0.0);
    std::vector<int64_t>& kept = keep[p];
    const int64_t g_size = E / G;
    for (int64_t g = 0; g < G; ++g) {
      std::vector<double> score(static_cast<size_t>(g_size));
      for (int64_t j = 0; j < g_size; ++j) {
        const size_t e = static_cast<size_t>(g * g_size + j);
        score[static_cast<size_t>(j)] = (tl > 0 ? load[e] / tl : 0.0) + (tm > 0 ? mass[e] / tm : 0.0);
      }
      for (int64_t j : split_lowest(score, n_remove / G).first) kept.push_back(g * g_size + j);
    }
  }
  return keep;
}

void remove_experts(model::ModelConfig& c, TensorMap& state, const std::map<std::string, std::vector<int64_t>>& keep) {
  const auto prefixes = moe_prefixes(c);
  if (prefixes.empty()) throw ConfigError("prune: the model has no routed experts");
  int64_t E2 = -1;
  for (const auto& p : prefixes) {
    auto it = keep.find(p);
    if (it == keep.end()) throw ConfigError(fmt("prune: no kept-expert list for ", p));
    const std::vector<int64_t>& kept = it->second;
    if (E2 >= 0 && static_cast<int64_t>(kept.size()) != E2)
      throw ConfigError("prune: every MoE layer must keep the same number of experts (one config for all)");
    E2 = static_cast<int64_t>(kept.size());
    const at::Tensor k = index_tensor(kept);
    for (const char* t : {".gate.weight", ".gate.e_score_correction_bias"}) state[p + t] = need(state, p + t).index_select(0, k);
    // experts.J.<rest> -> experts.<new J>.<rest>
    const std::string ep = p + ".experts.";
    TensorMap moved;
    for (auto i = state.begin(); i != state.end();) {
      if (!starts_with(i->first, ep)) {
        ++i;
        continue;
      }
      const std::string tail = i->first.substr(ep.size());
      const size_t dot = tail.find('.');
      const int64_t j = std::stoll(tail.substr(0, dot));
      auto pos = std::find(kept.begin(), kept.end(), j);
      if (pos != kept.end()) moved[fmt(ep, pos - kept.begin(), tail.substr(dot))] = i->second;
      i = state.erase(i);
    }
    state.insert(moved.begin(), moved.end());
  }
  c.n_routed_experts = E2;
  model::validate(c, "pruned model config");
}

// ------------------------------------------------------------------------------------------ heads
std::map<std::string, std::vector<int64_t>> prune_heads(model::ModelConfig& c, TensorMap& state, double amount) {
  check_amount(amount);
  require_deepseek(c, "heads");
  const int64_t H = c.num_attention_heads, dqk = c.qk_head_dim(), dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  const int64_t n_remove = std::llround(amount * static_cast<double>(H));
  if (n_remove < 1 || n_remove >= H)
    throw ConfigError(fmt("prune --method heads: --amount ", amount, " removes ", n_remove, " of ", H,
                          " heads per layer; it must remove at least one and keep at least one"));
  std::map<std::string, std::vector<int64_t>> removed_all;
  const std::string q_name = c.q_lora_rank > 0 ? ".q_b_proj.weight" : ".q_proj.weight";
  for (int64_t l = 0; l < c.num_hidden_layers + c.num_nextn_predict_layers; ++l) {
    const std::string p = layer_prefix(l) + ".self_attn";
    const at::Tensor q = need(state, p + q_name), kvb = need(state, p + ".kv_b_proj.weight"), o = need(state, p + ".o_proj.weight");
    const at::Tensor qh = q.view({H, dqk, -1}), kvh = kvb.view({H, dn + dv, -1}), oh = o.view({o.size(0), H, dv});  // per head
    const std::vector<int64_t> rows_of_head = {1, 2}, cols_of_head = {0, 2};
    const at::Tensor score = (qh.pow(2).sum(rows_of_head) + kvh.pow(2).sum(rows_of_head) + oh.pow(2).sum(cols_of_head)).sqrt();  // [H]
    auto [kept, removed] = split_lowest(to_vector(score), n_remove);
    const at::Tensor k = index_tensor(kept);
    const int64_t H2 = static_cast<int64_t>(kept.size());
    state[p + q_name] = qh.index_select(0, k).reshape({H2 * dqk, q.size(1)});
    state[p + ".kv_b_proj.weight"] = kvh.index_select(0, k).reshape({H2 * (dn + dv), kvb.size(1)});
    state[p + ".o_proj.weight"] = oh.index_select(1, k).reshape({o.size(0), H2 * dv});
    removed_all[p] = removed;
  }
  c.num_attention_heads = c.num_key_value_heads = H - n_remove;
  model::validate(c, "pruned model config");
  return removed_all;
}

// ------------------------------------------------------------------------------------------ neurons
std::map<std::string, std::vector<int64_t>> prune_neurons(model::ModelConfig& c, TensorMap& state, double amount) {
  check_amount(amount);
  require_deepseek(c, "neurons");
  const int64_t r_dense = std::llround(amount * static_cast<double>(c.intermediate_size));
  const int64_t r_expert = c.n_routed_experts > 0 ? std::llround(amount * static_cast<double>(c.moe_intermediate_size)) : 0;
  const bool has_dense = std::any_of(state.begin(), state.end(), [](const auto& kv) { return ends_with(kv.first, ".mlp.gate_proj.weight"); });
  if ((has_dense ? r_dense : 0) + r_expert < 1)
    throw ConfigError(fmt("prune --method neurons: --amount ", amount, " removes no neuron (intermediate_size ",
                          c.intermediate_size, ", moe_intermediate_size ", c.moe_intermediate_size, ")"));
  if ((has_dense && r_dense >= c.intermediate_size) || (c.n_routed_experts > 0 && r_expert >= c.moe_intermediate_size))
    throw ConfigError(fmt("prune --method neurons: --amount ", amount, " leaves no neuron"));
  std::map<std::string, std::vector<int64_t>> removed;
  const auto moe = moe_prefixes(c);
  for (int64_t l = 0; l < c.num_hidden_layers + c.num_nextn_predict_layers; ++l) {
    const std::string p = layer_prefix(l) + ".mlp";
    if (std::find(moe.begin(), moe.end(), p) == moe.end()) {
      if (r_dense > 0) removed[p] = prune_swiglu(state, p, r_dense);
      continue;
    }
    if (r_expert == 0) continue;
    for (int64_t e = 0; e < c.n_routed_experts; ++e) removed[fmt(p, ".experts.", e)] = prune_swiglu(state, fmt(p, ".experts.", e), r_expert);
    if (c.n_shared_experts > 0)
      removed[p + ".shared_experts"] = prune_swiglu(state, p + ".shared_experts", c.n_shared_experts * r_expert);
  }
  if (has_dense) c.intermediate_size -= r_dense;
  if (c.n_routed_experts > 0) c.moe_intermediate_size -= r_expert;
  model::validate(c, "pruned model config");
  return removed;
}

// ------------------------------------------------------------------------------------------ magnitude
bool magnitude_prunable(const std::string& name, const at::Tensor& t) {
  if (t.dim() != 2 || !ends_with(name, ".weight") || ends_with(name, "mlp.gate.weight")) return false;
  return name.find("embed") == std::string::npos && name != "lm_head.weight" && name != "transformer.wte.weight" &&
         name != "transformer.wpe.weight";
}

std::map<std::string, at::Tensor> magnitude_masks(const TensorMap& state, double amount, const std::string& scope) {
  if (!(amount >= 0.0 && amount < 1.0)) throw ConfigError(fmt("prune: --amount ", amount, " must be in [0, 1)"));
  if (scope != "global" && scope != "layer") throw ConfigError(fmt("prune: --scope '", scope, "' is unknown (global or layer)"));
  // The k smallest |w| of `flat` (stable: ties fall to the lower index) -> a float mask of `flat`'s size.
  auto mask_of = [&](const at::Tensor& flat) {
    const int64_t k = std::llround(amount * static_cast<double>(flat.numel()));
    at::Tensor mask = at::ones({flat.numel()}, at::kFloat);
    if (k > 0) {
      const at::Tensor order = std::get<1>(at::sort(flat.abs().to(at::kFloat), /*stable=*/true, 0, false));
      mask.index_fill_(0, order.narrow(0, 0, k), 0.0);
    }
    return mask;
  };
  std::map<std::string, at::Tensor> masks;
  if (scope == "layer") {
    for (const auto& [name, t] : state)
      if (magnitude_prunable(name, t)) masks[name] = mask_of(t.reshape({-1})).view(t.sizes());
    return masks;
  }
  std::vector<at::Tensor> parts;
  std::vector<std::string> names;
  for (const auto& [name, t] : state)
    if (magnitude_prunable(name, t)) parts.push_back(t.reshape({-1})), names.push_back(name);
  if (parts.empty()) return masks;
  const at::Tensor all = mask_of(at::cat(parts));
  int64_t off = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const at::Tensor& t = state.at(names[i]);
    masks[names[i]] = all.narrow(0, off, t.numel()).view(t.sizes());
    off += t.numel();
  }
  return masks;
}

double cubic_sparsity(int64_t t, int64_t t_end, double final_sparsity) {
  if (t_end <= 0 || t >= t_end) return final_sparsity;
  if (t <= 0) return 0.0;
  const double f = 1.0 - static_cast<double>(t) / static_cast<double>(t_end);
  return final_sparsity * (1.0 - f * f * f);
}

// ------------------------------------------------------------------------------------------ folder
void check_same_tokenizer(const std::string& model_dir, const std::string& tokenizer_path, const std::string& what) {
  const std::string mine = path_join(model_dir, "tokenizer.json");
  if (!file_exists(mine)) throw ConfigError(fmt(model_dir, ": no tokenizer.json (", what, " needs the model's tokenizer)"));
  if (!file_exists(tokenizer_path)) throw ConfigError(fmt(tokenizer_path, ": not found (", what, ")"));
  const auto a = tok::BpeTokenizer::load(mine), b = tok::BpeTokenizer::load(tokenizer_path);
  if (a.to_json() != b.to_json())
    throw ConfigError(fmt(what, ": tokenizer mismatch: ", mine, " (", a.vocab_size(), " tokens) and ", tokenizer_path, " (",
                          b.vocab_size(), " tokens) are different tokenizers; their token ids do not mean the same"));
}

std::string PruneReport::to_json() const {
  nlohmann::ordered_json j = {{"method", method},
                              {"amount", amount},
                              {"params_before", params_before},
                              {"params_after", params_after}};
  if (prunable > 0) {
    j["prunable_weights"] = prunable;
    j["zero_weights"] = zeros;
    j["sparsity"] = static_cast<double>(zeros) / static_cast<double>(prunable);
  }
  if (!removed.empty()) j["removed"] = removed;
  j["recover_steps"] = recover_steps;
  if (recover_steps > 0) j["recover_final_loss"] = recover_final_loss;
  return j.dump(2) + "\n";
}

PruneReport prune_model(const std::string& model_dir, const std::string& out_dir, const PruneOptions& o) {
  static const std::vector<std::string> methods = {"magnitude", "experts", "heads", "neurons"};
  if (std::find(methods.begin(), methods.end(), o.method) == methods.end())
    throw ConfigError(fmt("prune: --method '", o.method, "' is unknown (magnitude, experts, heads or neurons)"));
  check_amount(o.amount);
  if (o.schedule != "oneshot" && o.schedule != "cubic")
    throw ConfigError(fmt("prune: --schedule '", o.schedule, "' is unknown (oneshot or cubic)"));
  if (o.schedule == "cubic" && (o.method != "magnitude" || o.recover_steps < 1))
    throw ConfigError("prune: --schedule cubic prunes gradually during recovery: it needs --method magnitude and --recover-steps");
  if (o.recover_steps < 0) throw ConfigError("prune: --recover-steps must be >= 0");
  if (o.recover_steps > 0 && o.run_config.empty())
    throw ConfigError("prune: --recover-steps needs --config run.toml (the token shards and training settings)");
  if (!file_exists(path_join(model_dir, "config.json"))) throw ConfigError(fmt(model_dir, ": no config.json (not a model folder)"));
  if (fs::exists(out_dir) && !fs::is_empty(out_dir)) throw ConfigError(fmt(out_dir, ": exists and is not empty"));
  const auto raw = nlohmann::json::parse(read_file(path_join(model_dir, "config.json")), nullptr, false);
  if (raw.is_object() && raw.contains("quantization_config"))
    throw ConfigError(fmt(model_dir, ": is quantised; prune the float model (then quantise the pruned one)"));

  model::CausalLm m = model::load_pretrained(model_dir);
  model::ModelConfig c = m->config();
  if (o.method == "experts" && (!c.is_deepseek() || c.n_routed_experts <= 0))
    throw ConfigError(fmt("prune --method experts: ", model_dir, " is a dense model (", c.model_type,
                          ", no routed experts); use --method neurons, heads or magnitude"));
  PruneReport r;
  r.method = o.method;
  r.amount = o.amount;
  r.params_before = model::count_parameters(*m);
  TensorMap state = model::model_state(*m);
  for (auto& [name, t] : state) t = t.clone();  // the module's own tensors stay as loaded
  std::map<std::string, at::Tensor> masks;

  if (o.method == "experts") {
    const at::Tensor rows = calibration_rows(model_dir, c, o);
    log_info("prune: routing statistics on ", rows.numel(), " calibration tokens (", rows.size(0), " rows)");
    const auto keep = experts_to_keep(c, expert_statistics(*m, rows), o.amount);
    for (const auto& [p, kept] : keep) {
      std::vector<int64_t> gone;
      for (int64_t e = 0; e < c.n_routed_experts; ++e)
        if (!std::binary_search(kept.begin(), kept.end(), e)) gone.push_back(e);
      r.removed[p] = gone;
    }
    remove_experts(c, state, keep);
  } else if (o.method == "heads") {
    r.removed = prune_heads(c, state, o.amount);
  } else if (o.method == "neurons") {
    r.removed = prune_neurons(c, state, o.amount);
  } else if (o.schedule == "oneshot") {
    masks = magnitude_masks(state, o.amount, o.scope);
    for (auto& [name, mask] : masks) state[name] = state[name] * mask;
  }
  m = model::build_model(c);
  model::load_model_state(*m, state, fmt("pruned ", model_dir));

  if (o.recover_steps > 0) {
    RecoveryOptions ro;
    ro.steps = o.recover_steps;
    ro.run_config = o.run_config;
    ro.overrides = o.overrides;
    ro.work_dir = o.recovery_dir.empty() ? out_dir + ".recovery" : o.recovery_dir;
    ro.identity = fmt(fs::absolute(model_dir).string(), "|", o.method, "|", o.amount, "|", o.scope, "|", o.schedule);
    if (o.method == "magnitude") {
      ro.keep_zeros = true;
      ro.scope = o.scope;
      if (o.schedule == "cubic") {
        ro.cubic_final = o.amount;
        ro.prune_every = std::max<int64_t>(1, o.prune_every);
        ro.prune_end = std::max<int64_t>(1, std::llround(o.prune_end * static_cast<double>(o.recover_steps)));
      }
    }
    const RecoveryResult rr = recover(m, model_dir, ro);
    r.recover_steps = rr.final_step;
    r.recover_final_loss = rr.final_loss;
  }
  r.params_after = model::count_parameters(*m);
  if (o.method == "magnitude") {
    for (const auto& [name, t] : model::model_state(*m))
      if (magnitude_prunable(name, t)) r.prunable += t.numel(), r.zeros += (t == 0).sum().item<int64_t>();
  }

  const std::string stage = out_dir + ".partial";
  remove_all(stage);
  model::save_pretrained(stage, *m);
  model::copy_companion_files(model_dir, stage);
  write_file_atomic(path_join(stage, "dsforge_pruning.json"), r.to_json());
  publish_dir(stage, out_dir, "pruned model");
  return r;
}

}  // namespace dsforge::compress
