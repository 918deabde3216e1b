// DeepSeek-V3 layers (DEEPSEEK.md §1). Parameter names are the Hugging Face names, so a module's
// state dict is the checkpoint layout (`self_attn.kv_a_proj_with_mqa.weight`, `mlp.gate.weight`...).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "dsforge/model/config.h"

namespace dsforge::model {

// y = x / sqrt(mean(x^2) + eps) * w, computed in float32 and cast back (§1.2).
// Reduced-precision tensors (bf16/fp16) are computed in float32; float64 stays float64 (gradient checks).
inline at::ScalarType compute_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// cos/sin tables [max_pos, d_r/2] of RoPE, with YaRN applied when configured (§1.3).
struct RopeTables {
  at::Tensor cos, sin;
  double softmax_scale = 1.0;  // 1/sqrt(d_qk), times mscale^2 under YaRN
};
RopeTables make_rope_tables(const ModelConfig& c, int64_t max_pos);
// YaRN's correction range (low, high) for the given config; used by tests.
std::pair<double, double> yarn_correction_range(const ModelConfig& c);
double yarn_mscale(double factor, double mscale);
// Rotates interleaved pairs (x[2i], x[2i+1]) of the last dim of x [B, S, ..., d_r] by pos * w_i,
// for positions start_pos .. start_pos + S - 1 (dim 1 of x).
at::Tensor apply_rope(const at::Tensor& x, const RopeTables& rope, int64_t start_pos);

// How decoding caches attention state (§1.4).
enum class CacheMode {
  kLatentAbsorbed,  // cache c_kv and k_pe (d_c + d_r per token); W_UK/W_UV absorbed (the default)
  kLatentExpanded,  // same cache; keys and values re-expanded through kv_b_proj at every step
  kFullKv,          // the official "naive" mode: per-head keys and values, H * (d_qk + d_v) per token
};

// The KV cache of one MLA layer.
struct MlaCache {
  CacheMode mode = CacheMode::kLatentAbsorbed;
  at::Tensor kv;       // [B, max_len, d_c]  normalised latent (latent modes)
  at::Tensor pe;       // [B, max_len, d_r]  rotated shared rope key (latent modes)
  at::Tensor k, v;     // [B, max_len, H, d_qk], [B, max_len, H, d_v] (kFullKv)
  at::Tensor key_pad;  // [B, max_len] bool, true where a position is left padding (batched prompts)
};

// Dropout probabilities (training only; 0 consumes no random numbers): after the embedding, on
// the attention probabilities, and on each sublayer's output before the residual add.
struct DropoutRates {
  double embedding = 0, attention = 0, residual = 0;
};

// Multi-head Latent Attention. The naive path (training) expands the latents into per-head keys
// and values; the absorbed path folds W_UK into the query and W_UV after attention, attending
// over the cached latents directly (exact by associativity).
class MlaAttentionImpl : public torch::nn::Module {
 public:
  explicit MlaAttentionImpl(const ModelConfig& c);
  int64_t n_heads() const { return n_heads_; }
  // x [B, S, d]. With a cache, the new tokens' state is written at [start_pos, start_pos + S) and the
  // queries attend to every cached position up to their own; the cache's mode picks the path.
  at::Tensor forward(const at::Tensor& x, const RopeTables& rope, int64_t start_pos = 0, MlaCache* cache = nullptr,
                     bool absorb = false);

  torch::nn::Linear q_a_proj{nullptr}, q_b_proj{nullptr}, q_proj{nullptr};
  RMSNorm q_a_layernorm{nullptr};
  torch::nn::Linear kv_a_proj_with_mqa{nullptr}, kv_b_proj{nullptr}, o_proj{nullptr};
  RMSNorm kv_a_layernorm{nullptr};
  double attention_dropout = 0;

 private:
  int64_t n_heads_, d_nope_, d_rope_, d_v_, d_c_;
};
TORCH_MODULE(MlaAttention);

// SwiGLU: down(silu(gate(x)) * up(x)) (§1.5).
class SwiGluMlpImpl : public torch::nn::Module {
 public:
  SwiGluMlpImpl(int64_t dim, int64_t inter);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(SwiGluMlp);

struct Routing {
  at::Tensor weights;  // [N, K] (unbiased scores, normalised, times routed_scaling_factor)
  at::Tensor indices;  // [N, K] selected experts (selection uses the biased scores)
  at::Tensor scores;   // [N, E] sigmoid or softmax scores, unbiased
};

// The router (§1.6). `e_score_correction_bias` is a buffer: it changes selection only, gets no
// gradient and no optimizer state; the trainer moves it with update_bias().
class MoeGateImpl : public torch::nn::Module {
 public:
  explicit MoeGateImpl(const ModelConfig& c);
  Routing forward(const at::Tensor& x);  // x [N, d]
  at::Tensor weight;                     // [E, d]
  at::Tensor e_score_correction_bias;    // [E], float32

 private:
  ModelConfig c_;
};
TORCH_MODULE(MoeGate);

// DeepSeekMoE: shared experts (one MLP of width N_s * f_e) plus K of E routed experts per token.
// Tokens are grouped by expert (a sort of the N*K assignments), each expert runs once on its rows.
class DeepseekMoeImpl : public torch::nn::Module {
 public:
  explicit DeepseekMoeImpl(const ModelConfig& c);
  at::Tensor forward(const at::Tensor& x);  // x [B, S, d]

  // Aux-loss-free balancing (§1.7): b_i += gamma * sign(mean_load - load_i) over the loads counted
  // since the last call; resets the counts. Returns the max/mean load ratio of those counts.
  double update_bias(double gamma);
  // Sequence-wise balance loss of the last training forward (0-dim tensor; undefined when not training).
  at::Tensor aux_loss() const { return aux_loss_; }
  void set_aux_alpha(double alpha) { aux_alpha_ = alpha; }
  const at::Tensor& load_counts() const { return load_; }
  // The counts the last update_bias() consumed ([E] float64; undefined before the first).
  const at::Tensor& last_load() const { return last_load_; }

  MoeGate gate{nullptr};
  torch::nn::ModuleList experts{nullptr};
  SwiGluMlp shared_experts{nullptr};

 private:
  ModelConfig c_;
  std::vector<SwiGluMlp> expert_list_;
  at::Tensor load_;      // [E] float64 assignment counts since the last bias update
  at::Tensor last_load_;
  at::Tensor aux_loss_;
  double aux_alpha_;
};
TORCH_MODULE(DeepseekMoe);

// Sequence-wise balance loss (eq. 17-20): alpha * sum_i f_i P_i per sequence, averaged.
// scores [B, S, E] unbiased; indices [B, S, K] the top-K used for f (detached).
at::Tensor sequence_balance_loss(const at::Tensor& scores, const at::Tensor& indices, int64_t n_experts, double alpha,
                                 bool normalise_scores);

}  // namespace dsforge::model
