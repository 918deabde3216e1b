#include "dsforge/model/baselines.h"

#include <ATen/ATen.h>

#include <cmath>

#include "dsforge/core/error.h"
#include "dsforge/kernels/fused.h"
#include "dsforge/model/deepseek.h"

namespace dsforge::model {

// ---------------------------------------------------------------- GPT-2
Gpt2BlockImpl::Gpt2BlockImpl(const ModelConfig& c) : n_heads_(c.num_attention_heads) {
  const int64_t d = c.hidden_size;
  auto ln = [&]() { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(c.layer_norm_epsilon)); };
  ln_1 = register_module("ln_1", ln());
  auto attn = register_module("attn", std::make_shared<torch::nn::Module>());
  c_attn = attn->register_module("c_attn", torch::nn::Linear(d, 3 * d));
  attn_proj = attn->register_module("c_proj", torch::nn::Linear(d, d));
  ln_2 = register_module("ln_2", ln());
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  c_fc = mlp->register_module("c_fc", torch::nn::Linear(d, c.intermediate_size));
  mlp_proj = mlp->register_module("c_proj", torch::nn::Linear(c.intermediate_size, d));
}

at::Tensor Gpt2BlockImpl::forward(const at::Tensor& x, const at::Tensor& mask, at::Tensor* k_cache, at::Tensor* v_cache,
                                  int64_t start) {
  const int64_t B = x.size(0), S = x.size(1), d = x.size(2), H = n_heads_, hd = d / H;
  at::Tensor qkv = c_attn(ln_1(x)).view({B, S, 3, H, hd});  // (B, S, 3, H, hd)
  at::Tensor q = qkv.select(2, 0), k = qkv.select(2, 1), v = qkv.select(2, 2);
  if (k_cache) {
    k_cache->narrow(1, start, S).copy_(k);
    v_cache->narrow(1, start, S).copy_(v);
    k = k_cache->narrow(1, 0, start + S);
    v = v_cache->narrow(1, 0, start + S);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  at::Tensor a;
  if (mask.defined() && !k_cache && (drop.attention == 0 || !is_training())) {  // a causal mask alone: the fused attention
    a = kernels::causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale);
  } else {
    at::Tensor raw = at::matmul(q.transpose(1, 2), k.permute({0, 2, 3, 1})).to(compute_dtype(x));  // (B, H, S, T)
    at::Tensor p = (mask.defined() && !k_cache ? kernels::causal_softmax(raw, scale)
                                               : at::softmax(mask.defined() ? raw * scale + mask : raw * scale, -1))
                       .to(x.scalar_type());
    if (drop.attention > 0) p = at::dropout(p, drop.attention, is_training());
    a = at::matmul(p, v.transpose(1, 2));
  }
  a = a.transpose(1, 2).reshape({B, S, d});
  auto resid = [&](const at::Tensor& t) { return drop.residual > 0 ? at::dropout(t, drop.residual, is_training()) : t; };
  at::Tensor h = x + resid(attn_proj(a));
  return h + resid(mlp_proj(kernels::gelu_tanh(c_fc(ln_2(h)))));
}

Gpt2Impl::Gpt2Impl(const ModelConfig& c) : c_(c) {
  validate(c, "gpt2 config");
  transformer = register_module("transformer", std::make_shared<torch::nn::Module>());
  wte = transformer->register_module("wte", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  wpe = transformer->register_module("wpe", torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
  h = transformer->register_module("h", torch::nn::ModuleList());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    blocks_.push_back(Gpt2Block(c));
    h->push_back(blocks_.back());
  }
  ln_f = transformer->register_module(
      "ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_epsilon)));
}

at::Tensor Gpt2Impl::run_hidden(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& mask,
                                std::vector<at::Tensor>* k_cache, std::vector<at::Tensor>* v_cache, int64_t start) {
  if (positions.max().item<int64_t>() >= c_.max_position_embeddings)
    throw Error(fmt("gpt2: position exceeds n_positions = ", c_.max_position_embeddings));
  at::Tensor x = wte(tokens) + wpe(positions);
  if (dropout_.embedding > 0) x = at::dropout(x, dropout_.embedding, is_training());
  for (size_t l = 0; l < blocks_.size(); ++l)
    x = blocks_[l](x, mask, k_cache ? &(*k_cache)[l] : nullptr, v_cache ? &(*v_cache)[l] : nullptr, start);
  return ln_f(x);
}

at::Tensor Gpt2Impl::run(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& mask,
                         std::vector<at::Tensor>* k_cache, std::vector<at::Tensor>* v_cache, int64_t start) {
  return at::linear(run_hidden(tokens, positions, mask, k_cache, v_cache, start), wte->weight);  // tied head
}

at::Tensor Gpt2Impl::hidden_states(const at::Tensor& tokens) {
  const int64_t S = tokens.size(1);
  at::Tensor pos = at::arange(S, tokens.options()).unsqueeze(0).expand({tokens.size(0), S});
  at::Tensor mask = at::full({S, S}, -INFINITY, wte->weight.options().dtype(compute_dtype(wte->weight))).triu(1);
  return run_hidden(tokens, pos, mask, nullptr, nullptr, 0);
}

void Gpt2Impl::set_dropout(const DropoutRates& rates) {
  dropout_ = rates;
  for (auto& b : blocks_) b->drop = rates;
}

at::Tensor Gpt2Impl::forward(const at::Tensor& tokens) { return at::linear(hidden_states(tokens), wte->weight); }

void Gpt2Impl::init_weights(double std, uint64_t seed) {
  model::init_weights(*this, std, seed);
  at::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed + 1);
  const double scaled = std / std::sqrt(2.0 * static_cast<double>(c_.num_hidden_layers));
  for (auto& b : blocks_)
    for (auto* lin : {&b->attn_proj, &b->mlp_proj})
      (*lin)->weight.copy_(at::normal(0.0, scaled, (*lin)->weight.sizes(), gen, at::TensorOptions().dtype(at::kFloat)));
}

namespace {
struct Gpt2DecodeState : DecodeState {
  std::vector<at::Tensor> k, v;
  at::Tensor key_pad;    // [B, max_len] bool or undefined
  at::Tensor pad_count;  // [B, 1] left-pad lengths: positions restart at 0 on each row's first real token
  void select_rows(const at::Tensor& rows) override {
    for (auto* ts : {&k, &v})
      for (auto& t : *ts) t = t.index_select(0, rows.to(t.device()));
    if (key_pad.defined()) key_pad = key_pad.index_select(0, rows.to(key_pad.device()));
    pad_count = pad_count.index_select(0, rows.to(pad_count.device()));
  }
};
}  // namespace

std::unique_ptr<DecodeState> Gpt2Impl::start_decode(int64_t batch, int64_t max_len, CacheMode, const at::Tensor& key_pad) {
  auto st = std::make_unique<Gpt2DecodeState>();
  st->max_len = std::min(max_len, c_.max_position_embeddings);
  const int64_t H = c_.num_attention_heads, hd = c_.hidden_size / H;
  auto opts = wte->weight.options().requires_grad(false);
  for (int64_t l = 0; l < c_.num_hidden_layers; ++l) {
    st->k.push_back(at::zeros({batch, st->max_len, H, hd}, opts));
    st->v.push_back(at::zeros({batch, st->max_len, H, hd}, opts));
  }
  st->key_pad = key_pad;
  st->pad_count = key_pad.defined() ? key_pad.sum(1, true).to(at::kLong)
                                    : at::zeros({batch, 1}, opts.dtype(at::kLong));
  return st;
}

at::Tensor Gpt2Impl::decode(const at::Tensor& tokens, DecodeState& state) {
  auto& st = dynamic_cast<Gpt2DecodeState&>(state);
  const int64_t B = tokens.size(0), S = tokens.size(1), start = st.len, T = start + S;
  if (T > st.max_len) throw Error(fmt("gpt2: KV cache holds ", st.max_len, " positions; ", T, " requested"));
  at::Tensor pos = (at::arange(start, T, tokens.options()).unsqueeze(0) - st.pad_count.to(tokens.device())).clamp_min(0);
  const auto mopts = wte->weight.options().dtype(compute_dtype(wte->weight));
  at::Tensor qpos = at::arange(start, T, tokens.options()).unsqueeze(1), kpos = at::arange(T, tokens.options()).unsqueeze(0);
  at::Tensor mask = at::zeros({S, T}, mopts).masked_fill(kpos > qpos, -INFINITY);
  if (st.key_pad.defined()) {
    at::Tensor pad = st.key_pad.narrow(1, 0, T).unsqueeze(1) & (kpos != qpos).unsqueeze(0);  // (B, S, T)
    mask = (at::zeros({B, S, T}, mopts).masked_fill(pad, -INFINITY) + mask).unsqueeze(1);
  }
  at::Tensor logits = run(tokens, pos, mask, &st.k, &st.v, start);
  st.len = T;
  return logits;
}

// ---------------------------------------------------------------- LSTM
LstmLmImpl::LstmLmImpl(const ModelConfig& c) : c_(c) {
  validate(c, "lstm config");
  embed = register_module("embed", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(c.hidden_size, c.hidden_size)
                                                     .num_layers(c.num_hidden_layers)
                                                     .batch_first(true)));
  if (!c.tie_word_embeddings)
    head = register_module("head", torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, c.vocab_size).bias(false)));
}

at::Tensor LstmLmImpl::logits(const at::Tensor& h) { return head ? head(h) : at::linear(h, embed->weight); }

at::Tensor LstmLmImpl::hidden_states(const at::Tensor& tokens) {
  at::Tensor x = embed(tokens);
  if (dropout_.embedding > 0) x = at::dropout(x, dropout_.embedding, is_training());
  at::Tensor h = std::get<0>(lstm(x));
  if (dropout_.residual > 0) h = at::dropout(h, dropout_.residual, is_training());
  return h;
}

at::Tensor LstmLmImpl::forward(const at::Tensor& tokens) { return logits(hidden_states(tokens)); }

namespace {
struct LstmDecodeState : DecodeState {
  at::Tensor h, c;       // [layers, B, d]
  at::Tensor key_pad;    // [B, max_len] bool or undefined
  void select_rows(const at::Tensor& rows) override {
    h = h.index_select(1, rows.to(h.device()));
    c = c.index_select(1, rows.to(c.device()));
    if (key_pad.defined()) key_pad = key_pad.index_select(0, rows.to(key_pad.device()));
  }
};
}  // namespace

std::unique_ptr<DecodeState> LstmLmImpl::start_decode(int64_t batch, int64_t max_len, CacheMode, const at::Tensor& key_pad) {
  auto st = std::make_unique<LstmDecodeState>();
  st->max_len = max_len;
  auto opts = embed->weight.options().requires_grad(false);
  st->h = at::zeros({c_.num_hidden_layers, batch, c_.hidden_size}, opts);
  st->c = at::zeros_like(st->h);
  st->key_pad = key_pad;
  return st;
}

at::Tensor LstmLmImpl::decode(const at::Tensor& tokens, DecodeState& state) {
  auto& st = dynamic_cast<LstmDecodeState&>(state);
  const int64_t S = tokens.size(1);
  if (!st.key_pad.defined()) {
    auto out = lstm(embed(tokens), std::make_tuple(st.h, st.c));
    std::tie(st.h, st.c) = std::get<1>(out);
    st.len += S;
    return logits(std::get<0>(out));
  }
  // Left padding: step by step, holding the state at zero while a row is still in its padding.
  std::vector<at::Tensor> outs;
  for (int64_t s = 0; s < S; ++s) {
    auto out = lstm(embed(tokens.narrow(1, s, 1)), std::make_tuple(st.h, st.c));
    at::Tensor keep = (~st.key_pad.select(1, st.len)).to(st.h.scalar_type()).view({1, -1, 1});
    st.h = std::get<0>(std::get<1>(out)) * keep;
    st.c = std::get<1>(std::get<1>(out)) * keep;
    outs.push_back(std::get<0>(out));
    ++st.len;
  }
  return logits(at::cat(outs, 1));
}

// ---------------------------------------------------------------- factory
CausalLm build_model(const ModelConfig& c) {
  if (c.is_deepseek()) return DeepseekV3(c).ptr();
  if (c.model_type == "gpt2") return Gpt2(c).ptr();
  if (c.model_type == "lstm") return LstmLm(c).ptr();
  throw ConfigError(fmt("model_type '", c.model_type, "' is not supported (deepseek_v3, gpt2, lstm)"));
}

}  // namespace dsforge::model
