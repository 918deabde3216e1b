// The interface every language model of dsforge implements (DeepSeek-V3, GPT-2, LSTM): what the
// trainer, evaluation, generation and checkpoints need, and nothing of how a model computes it.
//
//   CausalLm m = build_model(load_model_config("configs/model/gpt2-tiny.json"));
//   m->init_weights(0.02, /*seed=*/0);
//   LossOutput out = m->loss(tokens, /*mtp_weight=*/0.3);   // tokens [B, S + 1 + extra_target_tokens()]
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <memory>

#include "dsforge/model/config.h"
#include "dsforge/model/layers.h"

namespace dsforge::model {

struct LossOutput {
  at::Tensor total;     // main + lambda * mtp + balance
  at::Tensor main;      // next-token cross-entropy
  at::Tensor mtp;       // mean over depths of the MTP cross-entropies (undefined without MTP)
  at::Tensor balance;   // sum over MoE layers of the sequence-wise loss (undefined when off)
  int64_t tokens = 0;   // main-loss targets
};

// Per-model incremental decoding state (KV cache, recurrent state), created by start_decode().
struct DecodeState {
  virtual ~DecodeState() = default;
  // Keeps rows `rows` ([B'] int64, repeats allowed) of every cached tensor: beam search continues
  // each hypothesis from its parent's state.
  virtual void select_rows(const at::Tensor& rows) = 0;
  // Continuous batching (serve): a state over rows [row, row + n) that shares this one's storage,
  // positioned at `len` (the next token goes there). Writes through the view land in this state. Only
  // models whose attention is relative in position (RoPE: DeepSeek) can place a newcomer's prompt at
  // the batch's current position and give the same result; the others return nullptr.
  virtual std::unique_ptr<DecodeState> rows_view(int64_t row, int64_t n, int64_t len) { return nullptr; }
  // Marks key positions [0, pad_until) of `row` as padding and the rest as real (a newcomer's row).
  virtual void set_row_padding(int64_t row, int64_t pad_until) {}
  int64_t len = 0;      // positions consumed
  int64_t max_len = 0;
};

class CausalLmImpl : public torch::nn::Module {
 public:
  virtual const ModelConfig& config() const = 0;
  // tokens [B, S] -> logits [B, S, V].
  virtual at::Tensor forward(const at::Tensor& tokens) = 0;
  // tokens [B, S] -> the last hidden states [B, S, d] that the head reads (task heads pool these).
  virtual at::Tensor hidden_states(const at::Tensor& tokens) = 0;
  // Rows of S + 1 + extra_target_tokens() tokens: next-token loss on the first S + 1, plus any
  // auxiliary losses (MTP, balance) the model has. The default is the plain next-token loss.
  virtual LossOutput loss(const at::Tensor& tokens, double mtp_weight);
  // Input embeddings of tokens [B, S] -> [B, S, d], and the logits [B, S, V] of a sequence given as
  // embeddings: what a multimodal model needs to put image features before the text (vision/multimodal.h).
  // Models without them throw ConfigError naming the model type.
  virtual at::Tensor embed(const at::Tensor& tokens);
  virtual at::Tensor forward_embeddings(const at::Tensor& embeds);
  virtual int64_t extra_target_tokens() const { return 0; }

  // Every matrix and embedding ~ N(0, std^2), norms 1, biases 0; models may refine (GPT-2 scales
  // its residual projections).
  virtual void init_weights(double std, uint64_t seed);
  // MoE hooks; no-ops for dense models.
  virtual double update_expert_bias(double gamma) { return 1.0; }
  virtual void set_aux_alpha(double alpha) {}
  // Per MoE layer, the expert assignment counts of the last update_expert_bias() ([E] float64).
  virtual std::vector<at::Tensor> expert_loads() const { return {}; }
  // Per MoE layer, the counts accumulating toward the next update_expert_bias() ([E] float64, shared
  // storage: data parallelism sums them across ranks in place before the update).
  virtual std::vector<at::Tensor> pending_expert_counts() { return {}; }
  // Label smoothing of the training losses (evaluation never smooths).
  void set_label_smoothing(double eps) { label_smoothing_ = eps; }
  double label_smoothing() const { return label_smoothing_; }
  // Dropout for training (eval() turns it off); models apply the rates that fit their layers.
  virtual void set_dropout(const DropoutRates& rates) { dropout_ = rates; }
  const DropoutRates& dropout() const { return dropout_; }

  // Incremental decoding of [B, T] tokens -> logits [B, T, V]. `key_pad` [B, max_len] (bool, may be
  // undefined) marks left padding, which must not influence the real tokens.
  virtual std::unique_ptr<DecodeState> start_decode(int64_t batch, int64_t max_len, CacheMode mode,
                                                    const at::Tensor& key_pad) = 0;
  virtual at::Tensor decode(const at::Tensor& tokens, DecodeState& state) = 0;
  // Continuous batching's step over rows of a shared state (rows_view's models): row rows[i] takes
  // tokens[i], its next token or a newcomer's whole prompt, placed to end at position state.len, which
  // then moves on by one; rows not listed are left alone. Logits of each row's last token [rows, V].
  // Models or states without it return an undefined tensor.
  virtual at::Tensor decode_rows(const std::vector<int64_t>& rows, const std::vector<std::vector<int64_t>>& tokens,
                                 DecodeState& state) {
    return {};
  }
  // The most tokens (all rows together) one decode_rows call computes row by row, each token's result
  // then independent of the others'; 0 without decode_rows.
  virtual int64_t decode_rows_batch_tokens() const { return 0; }

 protected:
  double label_smoothing_ = 0.0;
  DropoutRates dropout_;
};
using CausalLm = std::shared_ptr<CausalLmImpl>;

// By config.model_type: "deepseek_v3" (also "deepseek_v2"), "gpt2", "lstm".
CausalLm build_model(const ModelConfig& c);
int64_t count_parameters(const torch::nn::Module& m);
// Cross-entropy of logits [B, S, V] against targets [B, S], computed in at least float32.
at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& targets, double label_smoothing = 0.0);

}  // namespace dsforge::model
