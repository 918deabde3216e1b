// The DeepSeek-V3 causal language model (DEEPSEEK.md §1): pre-norm decoder, MLA attention, dense
// SwiGLU for the first `first_k_dense_replace` layers then DeepSeekMoE, untied head, and
// `num_nextn_predict_layers` Multi-Token Prediction modules sharing the embedding and the head.
//
// State dict names are the Hugging Face ones: `model.embed_tokens.weight`,
// `model.layers.N.self_attn.q_a_proj.weight`, `model.layers.N.mlp.experts.J.gate_proj.weight`,
// `model.norm.weight`, `lm_head.weight`; MTP module k sits at `model.layers.{L+k}` with `enorm`,
// `hnorm`, `eh_proj` and `shared_head.norm` beside its block.
//
//   DeepseekV3 m(model_config_from_preset("nano"));
//   init_weights(*m, 0.02, /*seed=*/0);
//   LossOutput out = m->loss(tokens);   // tokens [B, S + 1 + D]
//   out.total.backward();
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <unordered_map>
#include <vector>

#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"
#include "dsforge/model/layers.h"

namespace dsforge::model {

// One pre-norm block; MTP modules are blocks with their extra parts (is_mtp).
class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& c, int64_t layer_idx, bool is_mtp);
  at::Tensor forward(const at::Tensor& h, const RopeTables& rope, int64_t start_pos = 0, MlaCache* cache = nullptr,
                     bool absorb = false);

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  MlaAttention self_attn{nullptr};
  SwiGluMlp dense_mlp{nullptr};  // registered as "mlp" when dense
  DeepseekMoe moe{nullptr};      // registered as "mlp" when MoE
  // MTP only
  RMSNorm enorm{nullptr}, hnorm{nullptr};
  torch::nn::Linear eh_proj{nullptr};
  std::shared_ptr<torch::nn::Module> shared_head;  // holds "norm"
  RMSNorm shared_head_norm{nullptr};
  double residual_dropout = 0;
};
TORCH_MODULE(DecoderLayer);

// The "model." part: embedding, layers (main + MTP), final norm.
class DeepseekV3BackboneImpl : public torch::nn::Module {
 public:
  explicit DeepseekV3BackboneImpl(const ModelConfig& c);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  std::vector<DecoderLayer> main_layers, mtp_layers;
};
TORCH_MODULE(DeepseekV3Backbone);

struct KvCache {
  std::vector<MlaCache> layers;
  int64_t max_len = 0;
  int64_t len = 0;      // positions filled
  int64_t bytes() const;
  // Marks positions as left padding (true) for every layer: [B, max_len] bool.
  void set_key_padding(const at::Tensor& pad);
};

class DeepseekV3Impl : public CausalLmImpl {
 public:
  explicit DeepseekV3Impl(const ModelConfig& c);

  // tokens [B, S] -> logits [B, S, V] (no cache).
  at::Tensor forward(const at::Tensor& tokens) override;
  at::Tensor hidden_states(const at::Tensor& tokens) override { return hidden(tokens); }
  at::Tensor embed(const at::Tensor& tokens) override;
  at::Tensor forward_embeddings(const at::Tensor& embeds) override;
  // Hidden states after the final norm [B, S, d] (also the MTP input h^0).
  at::Tensor hidden(const at::Tensor& tokens, int64_t start_pos = 0, KvCache* cache = nullptr, bool absorb = false);
  // The layers and final norm over input embeddings h [B, S, d] (hidden() after its embedding lookup).
  at::Tensor hidden_from_embeddings(at::Tensor h, int64_t start_pos = 0, KvCache* cache = nullptr, bool absorb = false);
  at::Tensor logits_from_hidden(const at::Tensor& h) { return lm_head(h); }

  // tokens [B, L] with L >= S + 1 where S = L - 1 - D when possible: the main model reads
  // tokens[:, :S] and predicts tokens[:, 1:S+1]; MTP depth k predicts tokens[:, k+1 : k+1+n_k].
  LossOutput loss(const at::Tensor& tokens, double mtp_weight = 0.3) override;
  int64_t extra_target_tokens() const override { return c_.num_nextn_predict_layers; }
  // MTP logits per depth for `tokens` [B, L]: depth k gets [B, n_k, V] (slot j predicts token j+k+1).
  // With targets (training) n_k = min(S, L-1-k) so every slot has a target; without, n_k = L-k.
  std::vector<at::Tensor> mtp_logits(const at::Tensor& tokens, const at::Tensor& h_main, bool with_targets = true);

  KvCache make_cache(int64_t batch, int64_t max_len, CacheMode mode = CacheMode::kLatentAbsorbed) const;
  // Appends `tokens` [B, T] to the cache and returns logits [B, T, V].
  at::Tensor forward_cached(const at::Tensor& tokens, KvCache& cache);

  // Aux-loss-free bias update on every MoE layer (main and MTP); returns the mean max/mean load.
  double update_expert_bias(double gamma) override;
  void set_aux_alpha(double alpha) override;
  std::vector<at::Tensor> expert_loads() const override;
  std::vector<at::Tensor> pending_expert_counts() override;
  void set_dropout(const DropoutRates& rates) override;
  std::unique_ptr<DecodeState> start_decode(int64_t batch, int64_t max_len, CacheMode mode,
                                            const at::Tensor& key_pad) override;
  at::Tensor decode(const at::Tensor& tokens, DecodeState& state) override;
  std::vector<DeepseekMoe> moe_layers() const;

  const ModelConfig& config() const override { return c_; }
  DeepseekV3Backbone model{nullptr};
  torch::nn::Linear lm_head{nullptr};

  // S new tokens per row (tokens [B, S], S <= kFusedMaxTokens) through the layers on raw float32
  // storage, appended to the cache: logits [B, S, V], the same as forward_cached's (decode_fused.cpp).
  // An undefined tensor where that path does not apply (training, grad mode, not float32 CPU, another
  // cache mode, longer chunks); forward_cached takes it for every decode step and short prompt (the
  // server's prefills) and falls back to the modules otherwise.
  static constexpr int64_t kFusedMaxTokens = 64;
  at::Tensor decode_step_fused(const at::Tensor& tokens, KvCache& cache);
  // The same step with a different number of tokens per sequence (continuous batching: a running
  // sequence's next token beside a newcomer's prompt): sequence seqs[j] takes tokens[j] (1 to
  // kFusedMaxTokens), placed to end at position cache.len, which then moves on by one. Sequences not
  // listed are left alone. Logits of each listed sequence's last token [seqs, V]; undefined where the
  // fused path does not apply (nothing is written then).
  at::Tensor decode_rows_fused(const std::vector<int64_t>& seqs, const std::vector<std::vector<int64_t>>& tokens,
                               KvCache& cache);
  at::Tensor decode_rows(const std::vector<int64_t>& rows, const std::vector<std::vector<int64_t>>& tokens,
                         DecodeState& state) override;
  int64_t decode_rows_batch_tokens() const override;

  // w8a8 decode (a folder written by `dsforge quantize --scheme w8a8`; model::load_pretrained attaches
  // them): the int8 rows of the linear layers, keyed by the float32 weight they were dequantised into.
  // decode_step_fused multiplies them with per-token int8 activations (kernels::linear_w8a8); a weight
  // changed since (its version counter moved) is read in float32 again. The module path (training,
  // prefill beyond kFusedMaxTokens) always reads the float32 weights.
  struct Int8Linear {
    at::Tensor q, scale;        // [out, in] int8, [out] float32
    std::vector<int32_t> sums;  // per row: sum of q (the kernel's unsigned-activation correction)
    int64_t version = 0;        // the float32 weight's version when attached
    float input_scale = 0;      // calibrated activation scale (`--calib`); 0 = per token, dynamic
  };
  std::unordered_map<const void*, Int8Linear> int8_linears;
  // bfloat16 decode weights (`dsforge serve --weights bf16`): a bfloat16 copy (round to nearest even) of
  // every linear weight of the main layers and the head, keyed like int8_linears. decode_step_fused
  // reads these, half the bytes, widened to float32 as they are loaded (kernels::gemm_nt_bf16w), with
  // float32 activations and products; the router, the norms, the embedding and W_UK (read by columns)
  // stay float32, and so does the module path. A weight changed since is read in float32 again.
  struct Bf16Linear {
    at::Tensor w;  // [out, in] bfloat16, contiguous
    int64_t version = 0;
  };
  std::unordered_map<const void*, Bf16Linear> bf16_linears;
  // Fills bf16_linears from the current float32 weights; returns how many weights it keeps.
  int64_t keep_bf16_weights();
  // Moves every float32 parameter into one block of huge-page memory (core/platform.h: alloc_huge_pages),
  // in module order, which is the order a decode step reads them; the int8 rows and bfloat16 copies follow
  // their weights' new addresses. The values do not change; while moving, resident memory briefly holds
  // one more copy (the old blocks go back to the system after). A batched decode step reads all of
  // micro's 38 MB of weights, more than this machine's L3: from scattered 4 KB pages its 16-row step took
  // 4-11% longer (both forms in one process, alternating). Returns the bytes moved.
  int64_t pack_weights();
  // While set, decode_step_fused records max |x| of the input of every linear it runs, keyed by the
  // float32 weight (what `dsforge quantize --calib` turns into static activation scales).
  std::unordered_map<const void*, float>* record_input_absmax = nullptr;

 private:
  // One token row of a fused step: the cache row (sequence) it belongs to, its position, its id, and
  // whether its logits are returned.
  struct FusedRow {
    int64_t seq = 0, pos = 0, token = 0;
    bool logits = true;
  };
  // The fused step over these token rows (decode_fused.cpp); cache.len = new_len after it. Logits of the
  // rows that ask for them, in order [n, V]; undefined where the path does not apply.
  at::Tensor fused_rows(const std::vector<FusedRow>& rows, KvCache& cache, int64_t new_len);

  ModelConfig c_;
  RopeTables rope_;
};
TORCH_MODULE(DeepseekV3);

// Every matrix and embedding ~ N(0, std^2); norms = 1; biases and the routing bias = 0 (§1.9).
void init_weights(torch::nn::Module& m, double std, uint64_t seed);

}  // namespace dsforge::model
