// Dense baselines behind the same CausalLm interface as DeepSeek-V3.
//
// GPT-2 (Radford et al. 2019; the layout nanoGPT and llm.c train): pre-LayerNorm blocks, causal
// multi-head attention with biases, a 4x GELU (tanh) MLP, learned absolute positions, the head tied
// to the token embedding. Parameter names follow GPT-2/nanoGPT (`transformer.h.N.attn.c_attn.weight`)
// with nn.Linear's [out, in] layout (Hugging Face stores these Conv1D weights transposed).
//
// LSTM: embedding -> stacked LSTM -> linear head (tied to the embedding by default).
#pragma once
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/rnn.h>

#include "dsforge/model/causal_lm.h"

namespace dsforge::model {

class Gpt2BlockImpl : public torch::nn::Module {
 public:
  Gpt2BlockImpl(const ModelConfig& c);
  // x [B, S, d]; with a cache (k/v [B, max, H, hd]) the new keys/values go to [start, start + S).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask, at::Tensor* k_cache = nullptr,
                     at::Tensor* v_cache = nullptr, int64_t start = 0);
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  torch::nn::Linear c_attn{nullptr}, attn_proj{nullptr}, c_fc{nullptr}, mlp_proj{nullptr};
  DropoutRates drop;

 private:
  int64_t n_heads_;
};
TORCH_MODULE(Gpt2Block);

class Gpt2Impl : public CausalLmImpl {
 public:
  explicit Gpt2Impl(const ModelConfig& c);
  const ModelConfig& config() const override { return c_; }
  at::Tensor forward(const at::Tensor& tokens) override;
  at::Tensor hidden_states(const at::Tensor& tokens) override;
  // N(0, std) everywhere, and std / sqrt(2 L) for the residual projections (GPT-2 paper §2.3).
  void init_weights(double std, uint64_t seed) override;
  std::unique_ptr<DecodeState> start_decode(int64_t batch, int64_t max_len, CacheMode mode,
                                            const at::Tensor& key_pad) override;
  at::Tensor decode(const at::Tensor& tokens, DecodeState& state) override;
  void set_dropout(const DropoutRates& rates) override;

  std::shared_ptr<torch::nn::Module> transformer;  // wte, wpe, h, ln_f
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};

 private:
  // positions [B, S] (absolute, padding-corrected); mask broadcastable to [B, H, S, T].
  at::Tensor run(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& mask,
                 std::vector<at::Tensor>* k_cache, std::vector<at::Tensor>* v_cache, int64_t start);
  // The same, stopping after the final layer norm.
  at::Tensor run_hidden(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& mask,
                        std::vector<at::Tensor>* k_cache, std::vector<at::Tensor>* v_cache, int64_t start);
  ModelConfig c_;
  std::vector<Gpt2Block> blocks_;
};
TORCH_MODULE(Gpt2);

class LstmLmImpl : public CausalLmImpl {
 public:
  explicit LstmLmImpl(const ModelConfig& c);
  const ModelConfig& config() const override { return c_; }
  at::Tensor forward(const at::Tensor& tokens) override;
  at::Tensor hidden_states(const at::Tensor& tokens) override;
  std::unique_ptr<DecodeState> start_decode(int64_t batch, int64_t max_len, CacheMode mode,
                                            const at::Tensor& key_pad) override;
  at::Tensor decode(const at::Tensor& tokens, DecodeState& state) override;

  torch::nn::Embedding embed{nullptr};
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Linear head{nullptr};  // unused (undefined) when tied

 private:
  at::Tensor logits(const at::Tensor& h);
  ModelConfig c_;
};
TORCH_MODULE(LstmLm);

}  // namespace dsforge::model
