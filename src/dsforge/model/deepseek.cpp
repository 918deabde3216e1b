#include "dsforge/model/deepseek.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <new>
#include <unordered_set>

#include "dsforge/core/error.h"
#include "dsforge/core/platform.h"
#include "dsforge/kernels/fused.h"

namespace dsforge::model {

// ---------------------------------------------------------------- layer
DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, int64_t layer_idx, bool is_mtp) {
  const int64_t d = c.hidden_size;
  if (is_mtp) {  // HF order: enorm, hnorm, eh_proj, then the block, then shared_head
    enorm = register_module("enorm", RMSNorm(d, c.rms_norm_eps));
    hnorm = register_module("hnorm", RMSNorm(d, c.rms_norm_eps));
    eh_proj = register_module("eh_proj", torch::nn::Linear(torch::nn::LinearOptions(2 * d, d).bias(false)));
  }
  input_layernorm = register_module("input_layernorm", RMSNorm(d, c.rms_norm_eps));
  self_attn = register_module("self_attn", MlaAttention(c));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(d, c.rms_norm_eps));
  // MTP blocks are MoE blocks like the main layers after the dense ones (§1.8).
  const bool use_moe = c.n_routed_experts > 0 && (is_mtp || c.is_moe_layer(layer_idx));
  if (use_moe) moe = register_module("mlp", DeepseekMoe(c));
  else dense_mlp = register_module("mlp", SwiGluMlp(d, c.intermediate_size));
  if (is_mtp) {
    shared_head = register_module("shared_head", std::make_shared<torch::nn::Module>());
    shared_head_norm = shared_head->register_module("norm", RMSNorm(d, c.rms_norm_eps));
  }
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& h, const RopeTables& rope, int64_t start_pos, MlaCache* cache,
                                     bool absorb) {
  auto drop = [&](const at::Tensor& t) { return residual_dropout > 0 ? at::dropout(t, residual_dropout, is_training()) : t; };
  at::Tensor x = h + drop(self_attn(input_layernorm(h), rope, start_pos, cache, absorb));
  at::Tensor n = post_attention_layernorm(x);
  return x + drop(moe ? moe(n) : dense_mlp(n));
}

// ---------------------------------------------------------------- backbone
DeepseekV3BackboneImpl::DeepseekV3BackboneImpl(const ModelConfig& c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    main_layers.push_back(DecoderLayer(c, l, false));
    layers->push_back(main_layers.back());
  }
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    mtp_layers.push_back(DecoderLayer(c, c.num_hidden_layers + k, true));
    layers->push_back(mtp_layers.back());
  }
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

// ---------------------------------------------------------------- model
DeepseekV3Impl::DeepseekV3Impl(const ModelConfig& c) : c_(c) {
  validate(c, "model config");
  model = register_module("model", DeepseekV3Backbone(c));
  lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, c.vocab_size).bias(false)));
  rope_ = make_rope_tables(c, c.max_position_embeddings);
}

at::Tensor DeepseekV3Impl::hidden(const at::Tensor& tokens, int64_t start_pos, KvCache* cache, bool absorb) {
  // absorb only matters without a cache (the cache's mode decides otherwise)
  return hidden_from_embeddings(model->embed_tokens(tokens), start_pos, cache, absorb);  // (B, S, d)
}

at::Tensor DeepseekV3Impl::hidden_from_embeddings(at::Tensor h, int64_t start_pos, KvCache* cache, bool absorb) {
  if (start_pos + h.size(1) > c_.max_position_embeddings)
    throw Error(fmt("model: position ", start_pos + h.size(1), " exceeds max_position_embeddings ", c_.max_position_embeddings));
  if (dropout_.embedding > 0) h = at::dropout(h, dropout_.embedding, is_training());
  for (size_t l = 0; l < model->main_layers.size(); ++l)
    h = model->main_layers[l](h, rope_, start_pos, cache ? &cache->layers[l] : nullptr, absorb);
  return model->norm(h);
}

at::Tensor DeepseekV3Impl::embed(const at::Tensor& tokens) { return model->embed_tokens(tokens); }

at::Tensor DeepseekV3Impl::forward_embeddings(const at::Tensor& embeds) { return lm_head(hidden_from_embeddings(embeds)); }

at::Tensor DeepseekV3Impl::forward(const at::Tensor& tokens) { return lm_head(hidden(tokens)); }

std::vector<at::Tensor> DeepseekV3Impl::mtp_logits(const at::Tensor& tokens, const at::Tensor& h_main, bool with_targets) {
  // Depth k (1-based) at slot i: h'_i = eh_proj([enorm(Emb(t_{i+k})); hnorm(h^{k-1}_i)]), then a causal
  // block, then the shared head; it predicts t_{i+k+1} (eq. 21-23).
  std::vector<at::Tensor> out;
  const int64_t L = tokens.size(1);
  at::Tensor h_prev = h_main;
  for (size_t k0 = 0; k0 < model->mtp_layers.size(); ++k0) {
    const int64_t k = static_cast<int64_t>(k0) + 1;
    const int64_t n = std::min(h_prev.size(1), with_targets ? L - 1 - k : L - k);
    if (n <= 0) break;
    auto& layer = model->mtp_layers[k0];
    at::Tensor emb = model->embed_tokens(tokens.narrow(1, k, n));
    at::Tensor mixed = layer->eh_proj(at::cat({layer->enorm(emb), layer->hnorm(h_prev.narrow(1, 0, n))}, -1));
    at::Tensor h = layer->forward(mixed, rope_);
    out.push_back(lm_head(layer->shared_head_norm(h)));
    h_prev = h;
  }
  return out;
}

LossOutput DeepseekV3Impl::loss(const at::Tensor& tokens, double mtp_weight) {
  const int64_t D = c_.num_nextn_predict_layers, L = tokens.size(1);
  // Rows are training_row_length(seq_len) = S + 1 + D tokens: the D extra tokens are the MTP targets.
  if (L - 1 - D < 1)
    throw Error(fmt("model.loss: rows of ", L, " tokens; with ", D, " MTP depth(s) a row needs seq_len + 1 + ", D,
                    " tokens (model::training_row_length)"));
  const int64_t S = L - 1 - D;
  at::Tensor x = tokens.narrow(1, 0, S), y = tokens.narrow(1, 1, S);
  at::Tensor h = hidden(x);
  at::Tensor logits = lm_head(h);
  LossOutput out;
  out.main = next_token_loss(logits, y, label_smoothing_);
  out.tokens = y.numel();
  out.total = out.main;
  if (D > 0 && mtp_weight > 0) {
    auto mtp = mtp_logits(tokens, h);
    at::Tensor sum;
    for (size_t k0 = 0; k0 < mtp.size(); ++k0) {
      const int64_t k = static_cast<int64_t>(k0) + 1, n = mtp[k0].size(1);
      at::Tensor target = tokens.narrow(1, k + 1, n);
      at::Tensor ce = next_token_loss(mtp[k0], target, label_smoothing_);
      sum = sum.defined() ? sum + ce : ce;
    }
    if (sum.defined()) {
      out.mtp = sum / static_cast<double>(D);
      out.total = out.total + out.mtp * mtp_weight;
    }
  }
  if (is_training()) {
    for (auto& moe : moe_layers()) {
      at::Tensor a = moe->aux_loss();
      if (a.defined()) out.balance = out.balance.defined() ? out.balance + a : a;
    }
    if (out.balance.defined()) out.total = out.total + out.balance;
  }
  return out;
}

std::vector<DeepseekMoe> DeepseekV3Impl::moe_layers() const {
  std::vector<DeepseekMoe> out;
  for (const auto& l : model->main_layers)
    if (l->moe) out.push_back(l->moe);
  for (const auto& l : model->mtp_layers)
    if (l->moe) out.push_back(l->moe);
  return out;
}

double DeepseekV3Impl::update_expert_bias(double gamma) {
  auto layers = moe_layers();
  if (layers.empty()) return 1.0;
  double sum = 0;
  for (auto& m : layers) sum += m->update_bias(gamma);
  return sum / static_cast<double>(layers.size());
}

std::vector<at::Tensor> DeepseekV3Impl::expert_loads() const {
  std::vector<at::Tensor> out;
  for (const auto& m : moe_layers())
    if (m->last_load().defined()) out.push_back(m->last_load());
  return out;
}

std::vector<at::Tensor> DeepseekV3Impl::pending_expert_counts() {
  std::vector<at::Tensor> out;
  for (const auto& m : moe_layers()) out.push_back(m->load_counts());
  return out;
}

void DeepseekV3Impl::set_dropout(const DropoutRates& rates) {
  dropout_ = rates;
  for (auto* layers : {&model->main_layers, &model->mtp_layers})
    for (auto& l : *layers) {
      l->residual_dropout = rates.residual;
      l->self_attn->attention_dropout = rates.attention;
    }
}

namespace {
// numel elements of `dtype` in huge-page memory, released with the tensor's storage.
at::Tensor huge_page_tensor(int64_t numel, at::ScalarType dtype) {
  const size_t bytes = static_cast<size_t>(numel) * at::elementSize(dtype);
  void* p = alloc_huge_pages(bytes);
  if (!p) throw std::bad_alloc();
  return at::from_blob(p, {numel}, [bytes](void* q) { free_huge_pages(q, bytes); }, at::TensorOptions().dtype(dtype));
}
// Elements from one packed tensor to the next: each starts on a 64-byte cache line.
int64_t packed_numel(int64_t n, at::ScalarType dtype) {
  const int64_t line = 64 / static_cast<int64_t>(at::elementSize(dtype));
  return (n + line - 1) / line * line;
}
}  // namespace

int64_t DeepseekV3Impl::keep_bf16_weights() {
  at::NoGradGuard no_grad;
  bf16_linears.clear();
  std::vector<at::Tensor> weights;
  for (auto& layer : model->main_layers)
    for (const auto& m : layer->modules())
      if (const auto* lin = dynamic_cast<const torch::nn::LinearImpl*>(m.get())) weights.push_back(lin->weight);
  weights.push_back(lm_head->weight);
  for (const at::Tensor& w : weights)
    if (!w.device().is_cpu()) {  // the fused step that reads them is the CPU's: copies beside the weights
      for (const at::Tensor& v : weights)
        bf16_linears[v.data_ptr()] = {v.detach().to(at::kBFloat16).contiguous(), static_cast<int64_t>(v._version())};
      return static_cast<int64_t>(bf16_linears.size());
    }
  int64_t total = 0;
  for (const at::Tensor& w : weights) total += packed_numel(w.numel(), at::kBFloat16);
  // One block for all the copies, in the order the decode step reads them (see pack_weights).
  const at::Tensor arena = huge_page_tensor(total, at::kBFloat16);
  int64_t off = 0;
  for (const at::Tensor& w : weights) {
    at::Tensor copy = arena.narrow(0, off, w.numel()).view(w.sizes());
    copy.copy_(w.detach());  // round to nearest even, as .to(kBFloat16)
    bf16_linears[w.data_ptr()] = {copy, static_cast<int64_t>(w._version())};
    off += packed_numel(w.numel(), at::kBFloat16);
  }
  return static_cast<int64_t>(bf16_linears.size());
}

int64_t DeepseekV3Impl::pack_weights() {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> params;
  int64_t total = 0;
  std::unordered_set<const void*> seen;  // a tensor registered twice (tied weights) moves once
  for (const at::Tensor& p : parameters())
    if (p.device().is_cpu() && p.scalar_type() == at::kFloat && p.is_contiguous() && seen.insert(p.data_ptr()).second) {
      params.push_back(p);
      total += packed_numel(p.numel(), at::kFloat);
    }
  if (total == 0) return 0;
  const at::Tensor arena = huge_page_tensor(total, at::kFloat);
  struct Move {
    at::Tensor to;
    int64_t from_version = 0, to_version = 0;
  };
  std::unordered_map<const void*, Move> moved;
  std::vector<const void*> from;
  int64_t off = 0;
  // Each old block is released as its tensor moves, and the new block's pages are only touched as they
  // are written.
  for (at::Tensor& p : params) {
    at::Tensor to = arena.narrow(0, off, p.numel()).view(p.sizes());
    to.copy_(p);
    from.push_back(p.data_ptr());
    moved[from.back()] = {to, static_cast<int64_t>(p._version())};
    p.set_data(to);  // p shares the module's TensorImpl
    off += packed_numel(p.numel(), at::kFloat);
  }
  for (size_t i = 0; i < params.size(); ++i)  // after every copy (views of one block may share a version counter)
    moved.at(from[i]).to_version = static_cast<int64_t>(params[i]._version());
  release_free_heap();  // the old blocks: most came from the heap
  // The int8 rows and bfloat16 copies are keyed by their float32 weight's address and version: re-keyed,
  // current where they were current.
  auto rekey = [&](auto& forms) {
    std::remove_reference_t<decltype(forms)> out;
    for (auto& [key, form] : forms) {
      auto it = moved.find(key);
      if (it == moved.end()) {
        out.emplace(key, std::move(form));
        continue;
      }
      if (form.version == it->second.from_version) form.version = it->second.to_version;
      out.emplace(it->second.to.data_ptr(), std::move(form));
    }
    forms.swap(out);
  };
  rekey(int8_linears);
  rekey(bf16_linears);
  return total * static_cast<int64_t>(sizeof(float));
}

void DeepseekV3Impl::set_aux_alpha(double alpha) {
  for (auto& m : moe_layers()) m->set_aux_alpha(alpha);
}

int64_t KvCache::bytes() const {
  int64_t b = 0;
  for (const auto& l : layers)
    for (const at::Tensor* t : {&l.kv, &l.pe, &l.k, &l.v})
      if (t->defined()) b += t->numel() * t->element_size();
  return b;
}

void KvCache::set_key_padding(const at::Tensor& pad) {
  for (auto& l : layers) l.key_pad = pad;
}

KvCache DeepseekV3Impl::make_cache(int64_t batch, int64_t max_len, CacheMode mode) const {
  KvCache cache;
  cache.max_len = std::min(max_len, c_.max_position_embeddings);
  auto opts = lm_head->weight.options().requires_grad(false);
  const int64_t H = c_.num_attention_heads;
  for (int64_t l = 0; l < c_.num_hidden_layers; ++l) {
    MlaCache m;
    m.mode = mode;
    if (mode == CacheMode::kFullKv) {
      m.k = at::zeros({batch, cache.max_len, H, c_.qk_head_dim()}, opts);
      m.v = at::zeros({batch, cache.max_len, H, c_.v_head_dim}, opts);
    } else {
      m.kv = at::zeros({batch, cache.max_len, c_.kv_lora_rank}, opts);
      m.pe = at::zeros({batch, cache.max_len, c_.qk_rope_head_dim}, opts);
    }
    cache.layers.push_back(std::move(m));
  }
  return cache;
}

at::Tensor DeepseekV3Impl::forward_cached(const at::Tensor& tokens, KvCache& cache) {
  const int64_t T = tokens.size(1);
  if (cache.len + T > cache.max_len)
    throw Error(fmt("model: KV cache holds ", cache.max_len, " positions; ", cache.len + T, " requested"));
  if (T <= kFusedMaxTokens) {  // a decode step or a short prompt: the fused path where it applies
    at::Tensor logits = decode_step_fused(tokens, cache);
    if (logits.defined()) return logits;
  }
  at::Tensor h = hidden(tokens, cache.len, &cache);
  cache.len += T;
  return lm_head(h);
}

struct DeepseekDecodeState : DecodeState {
  KvCache cache;
  void select_rows(const at::Tensor& rows) override {
    for (auto& l : cache.layers)
      for (at::Tensor* t : {&l.kv, &l.pe, &l.k, &l.v, &l.key_pad})
        if (t->defined()) *t = t->index_select(0, rows.to(t->device()));
  }
  std::unique_ptr<DecodeState> rows_view(int64_t row, int64_t n, int64_t at_len) override {
    ensure_padding();
    auto v = std::make_unique<DeepseekDecodeState>();
    v->cache.max_len = cache.max_len;
    v->cache.len = v->len = at_len;
    v->max_len = max_len;
    for (const auto& l : cache.layers) {
      MlaCache m;
      m.mode = l.mode;
      for (auto [dst, src] : {std::pair{&m.kv, &l.kv}, {&m.pe, &l.pe}, {&m.k, &l.k}, {&m.v, &l.v}, {&m.key_pad, &l.key_pad}})
        if (src->defined()) *dst = src->narrow(0, row, n);
      v->cache.layers.push_back(std::move(m));
    }
    return v;
  }
  void set_row_padding(int64_t row, int64_t pad_until) override {
    ensure_padding();
    at::Tensor r = cache.layers.front().key_pad[row];
    r.fill_(false);
    r.narrow(0, 0, pad_until).fill_(true);
  }
  // One [B, max_len] padding tensor shared by every layer (created all-false on first use).
  void ensure_padding() {
    if (cache.layers.empty() || cache.layers.front().key_pad.defined()) return;
    const at::Tensor& any = cache.layers.front().kv.defined() ? cache.layers.front().kv : cache.layers.front().k;
    cache.set_key_padding(at::zeros({any.size(0), cache.max_len}, any.options().dtype(at::kBool)));
  }
};

std::unique_ptr<DecodeState> DeepseekV3Impl::start_decode(int64_t batch, int64_t max_len, CacheMode mode,
                                                          const at::Tensor& key_pad) {
  auto st = std::make_unique<DeepseekDecodeState>();
  st->cache = make_cache(batch, max_len, mode);
  st->max_len = st->cache.max_len;
  if (key_pad.defined()) st->cache.set_key_padding(key_pad);
  return st;
}

at::Tensor DeepseekV3Impl::decode(const at::Tensor& tokens, DecodeState& state) {
  auto& st = dynamic_cast<DeepseekDecodeState&>(state);
  at::Tensor logits = forward_cached(tokens, st.cache);
  st.len = st.cache.len;
  return logits;
}

at::Tensor DeepseekV3Impl::decode_rows(const std::vector<int64_t>& rows, const std::vector<std::vector<int64_t>>& tokens,
                                       DecodeState& state) {
  auto& st = dynamic_cast<DeepseekDecodeState&>(state);
  st.cache.len = st.len;  // the caller's position (a server's cohort sets it; no view per step)
  at::Tensor logits = decode_rows_fused(rows, tokens, st.cache);
  st.len = st.cache.len;
  return logits;
}

void init_weights(torch::nn::Module& m, double std, uint64_t seed) {
  at::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& item : m.named_parameters()) {
    at::Tensor& p = item.value();
    const std::string& name = item.key();
    const bool is_bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
    const bool is_norm = p.dim() == 1 && (name.find("norm") != std::string::npos || name.find("ln_") != std::string::npos);
    if (is_bias) {
      p.zero_();
    } else if (is_norm) {
      p.fill_(1.0);
    } else {
      at::Tensor r = at::normal(0.0, std, p.sizes(), gen, at::TensorOptions().dtype(at::kFloat));
      p.copy_(r);
    }
  }
  for (auto& item : m.named_buffers())
    if (item.key().find("e_score_correction_bias") != std::string::npos) item.value().zero_();
}

void CausalLmImpl::init_weights(double std, uint64_t seed) { model::init_weights(*this, std, seed); }

at::Tensor CausalLmImpl::embed(const at::Tensor&) {
  throw ConfigError(fmt("model type '", config().model_type, "' does not take input embeddings (multimodal prefixes need deepseek_v3)"));
}
at::Tensor CausalLmImpl::forward_embeddings(const at::Tensor& e) { return embed(e); }

LossOutput CausalLmImpl::loss(const at::Tensor& tokens, double) {
  const int64_t S = tokens.size(1) - 1;
  LossOutput out;
  out.main = next_token_loss(forward(tokens.narrow(1, 0, S)), tokens.narrow(1, 1, S), label_smoothing_);
  out.total = out.main;
  out.tokens = tokens.size(0) * S;
  return out;
}

int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& targets, double label_smoothing) {
  // The kernel reads bfloat16 logits as they are and computes in float32 (other dtypes are converted).
  return kernels::cross_entropy(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}), label_smoothing);
}

}  // namespace dsforge::model
