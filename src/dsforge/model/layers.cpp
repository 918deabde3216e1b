#include "dsforge/model/layers.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>

#include "dsforge/kernels/fused.h"

namespace dsforge::model {

// ---------------------------------------------------------------- RMSNorm
RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) { return kernels::rms_norm(x, weight, eps_); }

// ---------------------------------------------------------------- RoPE / YaRN
double yarn_mscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

std::pair<double, double> yarn_correction_range(const ModelConfig& c) {
  const double dr = static_cast<double>(c.qk_rope_head_dim);
  const double orig = static_cast<double>(c.rope_scaling.original_max_position_embeddings);
  auto dim_of = [&](double r) { return dr * std::log(orig / (r * 2 * M_PI)) / (2 * std::log(c.rope_theta)); };
  double low = std::max(std::floor(dim_of(c.rope_scaling.beta_fast)), 0.0);
  double high = std::min(std::ceil(dim_of(c.rope_scaling.beta_slow)), dr - 1);
  return {low, high};
}

RopeTables make_rope_tables(const ModelConfig& c, int64_t max_pos) {
  const int64_t half = c.qk_rope_head_dim / 2;
  at::Tensor i = at::arange(half, at::kDouble);
  at::Tensor freqs = at::pow(c.rope_theta, -2.0 * i / static_cast<double>(c.qk_rope_head_dim));  // w_i
  RopeTables t;
  t.softmax_scale = 1.0 / std::sqrt(static_cast<double>(c.qk_head_dim()));
  const bool yarn = c.rope_scaling.type == "yarn" &&
                    c.max_position_embeddings > c.rope_scaling.original_max_position_embeddings;
  if (yarn) {
    auto [low, high] = yarn_correction_range(c);
    if (low == high) high += 0.001;
    at::Tensor ramp = ((i - low) / (high - low)).clamp(0, 1);
    freqs = freqs / c.rope_scaling.factor * ramp + freqs * (1 - ramp);
    double m = c.rope_scaling.mscale_all_dim > 0 ? c.rope_scaling.mscale_all_dim : c.rope_scaling.mscale;
    double ms = yarn_mscale(c.rope_scaling.factor, m);
    t.softmax_scale *= ms * ms;
  }
  at::Tensor angles = at::outer(at::arange(max_pos, at::kDouble), freqs);  // [max_pos, d_r/2]
  t.cos = angles.cos().to(at::kFloat);
  t.sin = angles.sin().to(at::kFloat);
  return t;
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTables& rope, int64_t start_pos) {
  if (kernels::rope_applies(x, rope.cos, rope.sin, start_pos)) return kernels::rope(x, rope.cos, rope.sin, start_pos);
  const int64_t S = x.size(1);
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = S;
  shape.back() = x.size(-1) / 2;
  // cos/sin: [1, S, 1.., d_r/2], broadcast over batch and heads
  at::Tensor cos = rope.cos.narrow(0, start_pos, S).to(x.device(), x.scalar_type()).view(shape);
  at::Tensor sin = rope.sin.narrow(0, start_pos, S).to(x.device(), x.scalar_type()).view(shape);
  at::Tensor even = x.slice(-1, 0, c10::nullopt, 2), odd = x.slice(-1, 1, c10::nullopt, 2);
  return at::stack({even * cos - odd * sin, even * sin + odd * cos}, -1).flatten(-2);
}

// ---------------------------------------------------------------- MLA
namespace {
torch::nn::Linear linear(int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); }
}  // namespace

MlaAttentionImpl::MlaAttentionImpl(const ModelConfig& c)
    : n_heads_(c.num_attention_heads), d_nope_(c.qk_nope_head_dim), d_rope_(c.qk_rope_head_dim),
      d_v_(c.v_head_dim), d_c_(c.kv_lora_rank) {
  const int64_t d = c.hidden_size, H = n_heads_, dqk = d_nope_ + d_rope_;
  if (c.q_lora_rank > 0) {
    q_a_proj = register_module("q_a_proj", linear(d, c.q_lora_rank));
    q_a_layernorm = register_module("q_a_layernorm", RMSNorm(c.q_lora_rank, c.rms_norm_eps));
    q_b_proj = register_module("q_b_proj", linear(c.q_lora_rank, H * dqk));
  } else {
    q_proj = register_module("q_proj", linear(d, H * dqk));
  }
  kv_a_proj_with_mqa = register_module("kv_a_proj_with_mqa", linear(d, d_c_ + d_rope_));
  kv_a_layernorm = register_module("kv_a_layernorm", RMSNorm(d_c_, c.rms_norm_eps));
  kv_b_proj = register_module("kv_b_proj", linear(d_c_, H * (d_nope_ + d_v_)));
  o_proj = register_module("o_proj", linear(H * d_v_, d));
}

at::Tensor MlaAttentionImpl::forward(const at::Tensor& x, const RopeTables& rope, int64_t start_pos, MlaCache* cache,
                                     bool absorb) {
  const int64_t B = x.size(0), S = x.size(1), H = n_heads_, dqk = d_nope_ + d_rope_;
  at::Tensor q = q_proj ? q_proj(x) : q_b_proj(q_a_layernorm(q_a_proj(x)));
  q = q.view({B, S, H, dqk});                                   // q: (B, S, H, d_qk)
  at::Tensor q_nope = q.narrow(-1, 0, d_nope_);
  at::Tensor q_pe = apply_rope(q.narrow(-1, d_nope_, d_rope_), rope, start_pos);
  at::Tensor kv = kv_a_proj_with_mqa(x);                        // (B, S, d_c + d_r)
  at::Tensor c_kv = kv_a_layernorm(kv.narrow(-1, 0, d_c_));     // (B, S, d_c)
  at::Tensor k_pe = apply_rope(kv.narrow(-1, d_c_, d_rope_), rope, start_pos);  // (B, S, d_r), one key for all heads

  const int64_t T = cache ? start_pos + S : S;  // number of key positions
  const bool full_kv = cache && cache->mode == CacheMode::kFullKv;
  if (cache) absorb = cache->mode == CacheMode::kLatentAbsorbed;
  if (cache && !full_kv) {
    cache->kv.narrow(1, start_pos, S).copy_(c_kv);
    cache->pe.narrow(1, start_pos, S).copy_(k_pe);
    c_kv = cache->kv.narrow(1, 0, T);
    k_pe = cache->pe.narrow(1, 0, T);
  }
  // Causal mask with offset: query s (absolute start_pos + s) sees keys t <= start_pos + s; with
  // left padding, pad keys are hidden from every query but their own position.
  at::Tensor mask;
  const auto mopts = x.options().dtype(compute_dtype(x));
  const bool causal = S > 1 || start_pos + S != T, padded = cache && cache->key_pad.defined();
  at::Tensor qpos, kpos;  // built only when a mask is needed: a plain decode step needs none
  if (causal || padded) {
    qpos = at::arange(start_pos, start_pos + S, x.options().dtype(at::kLong)).unsqueeze(1);
    kpos = at::arange(T, x.options().dtype(at::kLong)).unsqueeze(0);
  }
  if (causal) mask = at::zeros({S, T}, mopts).masked_fill(kpos > qpos, -INFINITY);
  if (padded) {
    at::Tensor pad = cache->key_pad.narrow(1, 0, T).unsqueeze(1) & (kpos != qpos).unsqueeze(0);  // (B, S, T)
    at::Tensor pm = at::zeros({B, S, T}, mopts).masked_fill(pad, -INFINITY);
    mask = (mask.defined() ? pm + mask : pm).unsqueeze(1);  // (B, 1, S, T)
  }

  // Without padding the mask is purely causal: the fused scale + mask + softmax applies.
  const bool causal_only = causal && !padded;
  at::Tensor out;
  if (!absorb) {
    at::Tensor k, v;
    if (full_kv) {  // project the new tokens only, then read every cached key and value
      at::Tensor kvb = kv_b_proj(c_kv).view({B, S, H, d_nope_ + d_v_});
      cache->k.narrow(1, start_pos, S).copy_(at::cat({kvb.narrow(-1, 0, d_nope_), k_pe.unsqueeze(2).expand({B, S, H, d_rope_})}, -1));
      cache->v.narrow(1, start_pos, S).copy_(kvb.narrow(-1, d_nope_, d_v_));
      k = cache->k.narrow(1, 0, T);
      v = cache->v.narrow(1, 0, T);
    } else {
      at::Tensor kvb = kv_b_proj(c_kv).view({B, T, H, d_nope_ + d_v_});
      v = kvb.narrow(-1, d_nope_, d_v_);
      k = at::cat({kvb.narrow(-1, 0, d_nope_), k_pe.unsqueeze(2).expand({B, T, H, d_rope_})}, -1);  // (B, T, H, d_qk)
    }
    at::Tensor qf = at::cat({q_nope, q_pe}, -1).transpose(1, 2);                       // (B, H, S, d_qk)
    if (causal_only && (attention_dropout == 0 || !is_training())) {  // training and prefill: the fused causal attention
      out = kernels::causal_attention(qf, k.transpose(1, 2), v.transpose(1, 2), rope.softmax_scale)
                .transpose(1, 2)
                .reshape({B, S, H * d_v_});
      return o_proj(out);
    }
    at::Tensor raw = at::matmul(qf, k.permute({0, 2, 3, 1})).to(compute_dtype(x));  // (B, H, S, T)
    at::Tensor p = causal_only ? kernels::causal_softmax(raw, rope.softmax_scale)
                               : at::softmax(mask.defined() ? raw * rope.softmax_scale + mask : raw * rope.softmax_scale, -1);
    p = p.to(x.scalar_type());
    if (attention_dropout > 0) p = at::dropout(p, attention_dropout, is_training());
    out = at::matmul(p, v.transpose(1, 2)).transpose(1, 2).reshape({B, S, H * d_v_});  // (B, S, H*d_v)
  } else {
    at::Tensor wb = kv_b_proj->weight.view({H, d_nope_ + d_v_, d_c_});
    at::Tensor w_uk = wb.narrow(1, 0, d_nope_);   // (H, d_n, d_c)
    at::Tensor w_uv = wb.narrow(1, d_nope_, d_v_);  // (H, d_v, d_c)
    // Heads are folded into the rows of one bmm per batch element, so the cached latents are read
    // once per step, not once per head (a broadcast matmul would materialise them H times).
    // Per-head products as one bmm over heads (einsum would plan, permute and copy around it: at one
    // token per step that bookkeeping costs more than the arithmetic).
    at::Tensor q_abs = at::bmm(q_nope.permute({2, 0, 1, 3}).reshape({H, B * S, d_nope_}), w_uk)  // (H, B*S, d_c)
                           .view({H, B, S, d_c_})
                           .transpose(0, 1)
                           .reshape({B, H * S, d_c_});                                               // (B, H*S, d_c)
    at::Tensor qpe = q_pe.transpose(1, 2).reshape({B, H * S, d_rope_});                         // (B, H*S, d_r)
    at::Tensor raw = (at::bmm(q_abs, c_kv.transpose(1, 2)) + at::bmm(qpe, k_pe.transpose(1, 2)))
                         .view({B, H, S, T})
                         .to(compute_dtype(x));  // (B, H, S, T)
    at::Tensor p = causal_only ? kernels::causal_softmax(raw, rope.softmax_scale)
                               : at::softmax(mask.defined() ? raw * rope.softmax_scale + mask : raw * rope.softmax_scale, -1);
    p = p.to(x.scalar_type());
    if (attention_dropout > 0) p = at::dropout(p, attention_dropout, is_training());
    at::Tensor lat = at::bmm(p.reshape({B, H * S, T}), c_kv).view({B, H, S, d_c_});  // attend over latents
    out = at::bmm(lat.transpose(0, 1).reshape({H, B * S, d_c_}), w_uv.transpose(1, 2))  // (H, B*S, d_v)
              .view({H, B, S, d_v_})
              .permute({1, 2, 0, 3})
              .reshape({B, S, H * d_v_});
  }
  return o_proj(out);
}

// ---------------------------------------------------------------- SwiGLU
SwiGluMlpImpl::SwiGluMlpImpl(int64_t dim, int64_t inter) {
  gate_proj = register_module("gate_proj", linear(dim, inter));
  up_proj = register_module("up_proj", linear(dim, inter));
  down_proj = register_module("down_proj", linear(inter, dim));
}

at::Tensor SwiGluMlpImpl::forward(const at::Tensor& x) { return down_proj(kernels::silu_mul(gate_proj(x), up_proj(x))); }

// ---------------------------------------------------------------- gate
MoeGateImpl::MoeGateImpl(const ModelConfig& c) : c_(c) {
  weight = register_parameter("weight", at::empty({c.n_routed_experts, c.hidden_size}));
  e_score_correction_bias = register_buffer("e_score_correction_bias", at::zeros({c.n_routed_experts}, at::kFloat));
}

Routing MoeGateImpl::forward(const at::Tensor& x) {
  const int64_t N = x.size(0), E = c_.n_routed_experts, K = c_.num_experts_per_tok;
  const auto ct = compute_dtype(x);
  at::Tensor logits = at::linear(x.to(ct), weight.to(ct));  // router in (at least) float32
  at::Tensor scores = c_.scoring_func == "sigmoid" ? logits.sigmoid() : logits.softmax(-1);
  at::Tensor choice = scores.detach();
  const bool biased = c_.scoring_func == "sigmoid";
  if (biased) choice = choice + e_score_correction_bias.unsqueeze(0);
  if (c_.n_group > 1) {
    at::Tensor g = choice.view({N, c_.n_group, E / c_.n_group});
    // V3 (bias): group score = sum of the top-2 biased scores; V2: the max.
    at::Tensor gscore = biased ? std::get<0>(g.topk(std::min<int64_t>(2, E / c_.n_group), -1)).sum(-1)
                               : std::get<0>(g.max(-1));
    at::Tensor keep = std::get<1>(gscore.topk(c_.topk_group, -1));  // (N, topk_group)
    at::Tensor gmask = at::ones({N, c_.n_group}, x.options().dtype(at::kBool)).scatter_(1, keep, false);
    choice = g.masked_fill(gmask.unsqueeze(-1), -INFINITY).view({N, E});
  }
  at::Tensor idx = std::get<1>(choice.topk(K, -1));
  at::Tensor w = scores.gather(1, idx);  // weights from the unbiased scores
  if (biased && c_.norm_topk_prob) w = w / (w.sum(-1, true) + 1e-20);
  w = w * c_.routed_scaling_factor;
  return {w, idx, scores};
}

// ---------------------------------------------------------------- MoE
DeepseekMoeImpl::DeepseekMoeImpl(const ModelConfig& c) : c_(c), aux_alpha_(c.aux_loss_alpha) {
  gate = register_module("gate", MoeGate(c));
  experts = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    expert_list_.push_back(SwiGluMlp(c.hidden_size, c.moe_intermediate_size));
    experts->push_back(expert_list_.back());
  }
  if (c.n_shared_experts > 0)
    shared_experts = register_module("shared_experts", SwiGluMlp(c.hidden_size, c.n_shared_experts * c.moe_intermediate_size));
  load_ = at::zeros({c.n_routed_experts}, at::kDouble);
}

at::Tensor sequence_balance_loss(const at::Tensor& scores, const at::Tensor& indices, int64_t n_experts, double alpha,
                                 bool normalise_scores) {
  const int64_t B = scores.size(0), S = scores.size(1), K = indices.size(-1);
  at::Tensor counts = at::zeros({B, n_experts}, scores.options());
  counts.scatter_add_(1, indices.reshape({B, S * K}), at::ones({B, S * K}, scores.options()));
  at::Tensor f = (counts * (static_cast<double>(n_experts) / static_cast<double>(K * S))).detach();  // (B, E)
  at::Tensor s = normalise_scores ? scores / scores.sum(-1, true) : scores;
  at::Tensor P = s.mean(1);  // (B, E)
  return (f * P).sum(-1).mean() * alpha;
}

at::Tensor DeepseekMoeImpl::forward(const at::Tensor& x) {
  const int64_t B = x.size(0), S = x.size(1), d = x.size(2), E = c_.n_routed_experts, K = c_.num_experts_per_tok;
  at::Tensor flat = x.reshape({B * S, d});
  Routing r = gate(flat);

  // Decoding a few tokens (serving, generation): each token through its K experts directly. The
  // grouped path below costs a sort, a histogram and two scatters whatever the size, which dominate
  // a step of one token.
  if (!is_training() && B * S * K <= 16 && !at::GradMode::is_enabled()) {
    const at::Tensor idx = r.indices.to(at::kCPU), w = r.weights.to(at::kCPU, at::kDouble);
    const int64_t* ip = idx.data_ptr<int64_t>();
    const double* wp = w.data_ptr<double>();
    at::Tensor y = shared_experts ? shared_experts(flat) : at::zeros_like(flat);
    for (int64_t n = 0; n < B * S; ++n) {
      at::Tensor row = flat.narrow(0, n, 1), acc = y.narrow(0, n, 1);
      for (int64_t k = 0; k < K; ++k) acc.add_(expert_list_[static_cast<size_t>(ip[n * K + k])](row), wp[n * K + k]);
    }
    return y.view({B, S, d});
  }

  // Group the N*K (token, slot) assignments by expert: one sort, then a contiguous slice per expert.
  at::Tensor flat_idx = r.indices.reshape({-1});                   // (N*K)
  at::Tensor order = flat_idx.argsort();
  at::Tensor token_of = order.div(K, "floor");                     // token row of each sorted assignment
  at::Tensor w_sorted = r.weights.reshape({-1}).index_select(0, order).to(x.scalar_type()).unsqueeze(1);
  at::Tensor counts = at::bincount(flat_idx, {}, E).to(at::kCPU);
  const int64_t* cnt = counts.data_ptr<int64_t>();
  at::Tensor x_sorted = flat.index_select(0, token_of);            // (N*K, d)
  // float32, or under bf16 autocast: all experts in one fused node (kernels::grouped_swiglu). Otherwise
  // one split (its backward is one concatenation) rather than a narrow per expert (each of whose
  // backward passes would materialise and add a full-size gradient).
  at::Tensor y_sorted;
  std::vector<at::Tensor> weights;
  weights.reserve(static_cast<size_t>(3 * E));
  for (auto& ex : expert_list_)
    for (const auto& w : {ex->gate_proj->weight, ex->up_proj->weight, ex->down_proj->weight}) weights.push_back(w);
  if (kernels::grouped_swiglu_applies(x_sorted, weights)) {
    y_sorted = kernels::grouped_swiglu(x_sorted, std::vector<int64_t>(cnt, cnt + E), weights) * w_sorted;
  } else {
    const std::vector<at::Tensor> parts = x_sorted.split_with_sizes(c10::IntArrayRef(cnt, static_cast<size_t>(E)));
    std::vector<at::Tensor> outs;
    outs.reserve(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e)
      if (cnt[e] > 0) outs.push_back(expert_list_[static_cast<size_t>(e)](parts[static_cast<size_t>(e)]));  // idle experts do no work
    y_sorted = at::cat(outs, 0) * w_sorted;
  }
  at::Tensor y = at::zeros_like(flat).index_add(0, token_of, y_sorted);
  if (shared_experts) y = y + shared_experts(flat);

  if (is_training()) {
    load_ += counts.to(at::kDouble);
    aux_loss_ = aux_alpha_ > 0 ? sequence_balance_loss(r.scores.view({B, S, E}), r.indices.view({B, S, K}), E,
                                                       aux_alpha_, c_.scoring_func == "sigmoid")
                               : at::Tensor();
  }
  return y.view({B, S, d});
}

double DeepseekMoeImpl::update_bias(double gamma) {
  at::Tensor load = load_.clone();
  load_.zero_();
  last_load_ = load;
  const double total = load.sum().item<double>();
  if (total == 0) return 1.0;
  const double mean = total / static_cast<double>(c_.n_routed_experts);
  if (gamma > 0) {
    at::NoGradGuard no_grad;
    at::Tensor delta = (mean - load).sign() * gamma;  // sign(0) = 0: balanced experts stay
    gate->e_score_correction_bias.add_(delta.to(gate->e_score_correction_bias.device(), at::kFloat));
  }
  return load.max().item<double>() / mean;
}

}  // namespace dsforge::model
